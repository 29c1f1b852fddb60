"""The README's tour, run as a newcomer copy-pastes it.

Every line of the README's ```bash blocks is either run here (by bash, against the installed
`voxline`, with the virtualenv's bin on PATH as `source .venv/bin/activate` puts it) and its
exit code and output checked, or listed in SKIPPED with the reason, which the report shows. A
README command in neither place fails, and so does an entry here that the README lost, so the
tour and this test cannot drift apart.

Some commands run with a stated substitution, never a silent one: a scratch port for 8080 and
8090 (a developer's own server may hold them), the fake model for `local` where only the
plumbing is under test (the local model itself answers in the Python example's run), a loopback
server for the self-hosted URL, and a real conversation id for the README's example id.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ports import free_port
from tests.providers.chat_server import ChatServer, text_reply

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the virtualenv this suite runs in
FAKE_ANSWER = "agent> Hello! This is the fake model speaking."
GREETING = "agent> Hi, I'm the voxline assistant. How can I help?"

SKIPPED = {
    "make test": "it is how this suite runs: running it from here would recurse",
    "make lint": "CI runs it (.ci/run); a lint run is not a tour step",
    "make typecheck": "CI runs it (.ci/run); a type check is not a tour step",
    "voxline simulate caller.wav --out agent.wav": "needs a caller's recording and a whole call "
    "on Whisper, Piper and the local LLM (minutes on a small CPU); tests/voice/test_simulate.py "
    "runs simulate on synthesized callers",
    "voxline devices": "needs a sound card (PortAudio and an audio device)",
    "voxline talk": "needs a microphone and a speaker",
}
TWILIO = (
    "VOXLINE_TWILIO_VALIDATE_SIGNATURES=false voxline serve &",
    "curl -s -X POST localhost:8080/twilio/voice -d From=+14155550100 -d CallSid=CA1",
    "kill %1",
)
# Lines that only make sense together run as one shell session, under the first line's step.
GROUPED = {TWILIO[1]: TWILIO[0], TWILIO[2]: TWILIO[0]}

# Variables that would change what the tour does on a developer's machine.
# Set when the tests themselves run under `make test`: a nested make would print
# "Entering directory" lines and inherit the outer make's flags.
_OUTER_MAKE = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")

_HOSTILE_ENV = (
    "OPENAI_API_KEY",
    "VOXLINE_OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "VOXLINE_OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "VOXLINE_ANTHROPIC_API_KEY",
    "VOXLINE_LLM",
    "VOXLINE_SERVER_HOST",
    "VOXLINE_SERVER_PORT",
    "VOXLINE_DATABASE_URL",
    "VOXLINE_REDIS_URL",
    "VOXLINE_LOG_LEVEL",
    "VOXLINE_LOG_JSON",
    "VOXLINE_TWILIO_VALIDATE_SIGNATURES",
    "PYTHONPATH",  # --import must find the modules without it
)


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.M | re.S)


def readme_commands() -> list[str]:
    """Each command line of the ```bash blocks, without its trailing `# comment`, once."""
    commands: list[str] = []
    for block in readme_blocks("bash"):
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command and not command.startswith("#") and command not in commands:
                commands.append(command)
    return commands


@dataclass
class Tour:
    """A scratch folder holding a copy of `examples/`, and a shell as the README's reader has it
    after `source .venv/bin/activate`, with no keys, run from that folder."""

    home: Path
    env: dict[str, str]

    def run(
        self, command: str, *, stdin: str = "", timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.home,
            env={**self.env, **env},
            timeout=timeout,
        )


@pytest.fixture
def tour(tmp_path: Path) -> Tour:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if k not in _HOSTILE_ENV}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(BIN.parent),
        VOXLINE_DATA_DIR=str(tmp_path / "data"),
        PYTHONUNBUFFERED="1",
    )
    return Tour(tmp_path, env)


def one_line_error(result: subprocess.CompletedProcess[str], starts: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), result.stderr


# -- the steps: each gets the tour and the README's command ------------------------------------

Step = Callable[[Tour, str], None]


def make_dry_run(expected: str) -> Step:
    """A `make` target, dry-run (`make -n`): a fresh clone's first `make run` installs 1.5 GB
    and then serves until stopped, so the check is the `voxline` line the target runs, with
    stray PORT/SESSION/ARGS in the environment that must not be taken for make's variables."""

    def step(tour: Tour, command: str) -> None:
        args = shlex.split(command)
        env = {**tour.env, "PORT": "1", "SESSION": "conv_stray", "ARGS": "stray"}
        result = subprocess.run(
            ["make", "-n", "--no-print-directory", *args[1:]],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={k: v for k, v in env.items() if k not in _OUTER_MAKE},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1].strip() == expected, result.stdout

    return step


def activate(tour: Tour, command: str) -> None:
    if not (ROOT / ".venv" / "bin" / "activate").is_file():
        pytest.skip("no .venv in the repository: this suite runs from another environment")
    env = {**tour.env, "PATH": os.environ.get("PATH", "")}
    env.pop("VIRTUAL_ENV")
    result = subprocess.run(
        ["bash", "-c", f"{command} && command -v voxline && voxline --help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.splitlines()[0]) == ROOT / ".venv" / "bin" / "voxline"
    assert "chat" in result.stdout and "serve" in result.stdout


def doctor(tour: Tour, command: str) -> None:
    result = tour.run(command, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["role", "provider", "model"]
    assert [line.split()[0] for line in lines[1:5]] == ["llm", "stt", "tts", "vad"]


def chat(tour: Tour, command: str) -> None:
    """The default agent on the fake model (VOXLINE_LLM): stdout is the conversation alone."""
    result = tour.run(command, stdin="What is the capital of France?\n/quit\n", VOXLINE_LLM="fake")
    assert result.returncode == 0, result.stderr
    assert GREETING in result.stdout and FAKE_ANSWER in result.stdout
    assert "(conversation conv_" in result.stdout
    assert result.stderr == ""  # no log line mixed into the chat, nor under it


def chat_session(tour: Tour, command: str) -> None:
    """The README's id replaced by that of a conversation held just before."""
    first = tour.run("voxline chat", stdin="My name is Ada.\n/quit\n", VOXLINE_LLM="fake")
    conversation = re.findall(r"\(conversation (conv_\w+)", first.stdout)[0]
    command = re.sub(r"conv_\w+", conversation, command)
    result = tour.run(command, stdin="/history\n/quit\n", VOXLINE_LLM="fake")
    assert result.returncode == 0, result.stderr
    assert "user_text    My name is Ada." in result.stdout
    assert GREETING not in result.stdout  # a resumed conversation is not greeted again


@contextmanager
def serving(tour: Tour, command: str, port: int, **env: str) -> Iterator[str]:
    """`command` running until the block ends; yields its base URL once it answers."""
    server = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tour.home,
        env={**tour.env, "VOXLINE_LLM": "fake", **env},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[1][-3000:]
            try:
                httpx.get(f"{base}/api/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        yield base
    finally:
        server.send_signal(signal.SIGINT)
        try:
            out, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
    assert out == "", out  # the logs, uvicorn's access log included, are on stderr
    assert "Traceback" not in err, err[-3000:]


def serve(tour: Tour, command: str) -> None:
    """As written, on a scratch port through VOXLINE_SERVER_PORT (it replaces the default
    8080); the browser page and the API docs, offline, answer."""
    port = free_port()
    with serving(tour, command, port, VOXLINE_SERVER_PORT=str(port)) as base:
        assert httpx.get(base, timeout=30).status_code == 200
        page = httpx.get(f"{base}/api/docs", timeout=30)
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        assert "cdn" not in page.text.lower()
        script = re.findall(r'src="([^"]+\.js)"', page.text)[0]
        assert httpx.get(f"{base}{script}", timeout=30).status_code == 200


def serve_on_another_port(tour: Tour, command: str) -> None:
    """A scratch port for 8090; then the same command while that port is taken is one line
    that says how to choose another."""
    port = free_port()
    command = command.replace("8090", str(port))
    with serving(tour, command, port) as base:
        assert httpx.get(f"{base}/api/openapi.json", timeout=30).status_code == 200
        taken = tour.run(command, timeout=60, VOXLINE_LLM="fake")
    one_line_error(taken, f"error: 127.0.0.1:{port} is already in use")
    assert f"--port {port + 1}" in taken.stderr and f"make run PORT={port + 1}" in taken.stderr


def twilio_webhook(tour: Tour, command: str) -> None:
    """The three lines as one shell session, on a scratch port for 8080 (VOXLINE_SERVER_PORT
    in the session's environment reaches the backgrounded server), with a wait for the server
    to answer before `curl`, as a reader waits for its start-up."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    port = free_port()
    wait = (
        f"for i in $(seq 600); do curl -s -o /dev/null localhost:{port}/api/openapi.json "
        "&& break; sleep 0.2; done"
    )
    curl = TWILIO[1].replace("localhost:8080", f"localhost:{port}")
    script = "\n".join([command, wait, curl, TWILIO[2], "wait"])
    result = tour.run(script, timeout=180, VOXLINE_LLM="fake", VOXLINE_SERVER_PORT=str(port))
    assert "<Response><Connect" in result.stdout and "<ConversationRelay" in result.stdout, (
        result.stdout + result.stderr[-3000:]
    )
    assert f"ws://localhost:{port}/twilio/relay" in result.stdout
    assert "signature checks are off" in result.stderr.lower()


def hosted_without_key(variable: str) -> Step:
    """No key in the environment: one line that names the variable to set."""

    def step(tour: Tour, command: str) -> None:
        result = tour.run(command, stdin="hello\n/quit\n")
        one_line_error(result, "error: ")
        assert variable in result.stderr

    return step


def self_hosted(tour: Tour, command: str) -> None:
    """The URL pointed at a loopback server speaking Chat Completions; then at a port where
    nothing listens: one `[error]` line, no traceback, and the conversation goes on."""
    url = "http://127.0.0.1:8000/v1"
    with ChatServer([text_reply("Hello from ", "the server.")]) as server:
        result = tour.run(command.replace(url, server.base_url), stdin="hi\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert "agent> Hello from the server." in result.stdout
    closed = f"http://127.0.0.1:{free_port()}/v1"
    down = tour.run(command.replace(url, closed), stdin="hi\nhi again\n/quit\n")
    assert down.returncode == 0, down.stderr
    errors = [line for line in down.stdout.splitlines() if "[error]" in line]
    assert len(errors) == 2 and "cannot connect" in errors[0] and "--debug" in errors[0]
    assert "Traceback" not in down.stdout + down.stderr and down.stderr == ""


def fallback_without_key(tour: Tour, command: str) -> None:
    """No OpenAI key: one warning, and the next model answers (the fake model stands in for
    `local`, which answers in the Python example's run)."""
    result = tour.run(command.replace(",local", ",fake"), stdin="hello\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert FAKE_ANSWER in result.stdout
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and "skipped" in warnings[0], result.stderr
    assert "OPENAI_API_KEY" in warnings[0]


def python_example(tour: Tour, command: str) -> None:
    """The README's Python block is examples/concierge.py, and it runs on the local model."""
    [block] = readme_blocks("python")
    assert block == (ROOT / "examples" / "concierge.py").read_text()
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("the local extra is not installed (pip install -e '.[local]')")
    result = tour.run(command, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "no answer"
    assert "session started" in result.stderr  # the log is there: on stderr
    for mark in ("[info", '"event"', "session_id"):
        assert mark not in result.stdout, result.stdout


def validate(tour: Tour, command: str) -> None:
    """`ok` with the tools imported from a file; without them, the unknown tool is named."""
    [block] = readme_blocks("json")
    assert block == (ROOT / "examples" / "concierge.json").read_text()
    result = tour.run(command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: agent 'concierge'"
    missing = tour.run(command.split(" --import")[0])
    assert missing.returncode == 1
    assert "tools[0]: unknown tool 'get_weather'" in missing.stderr
    assert "ok:" not in missing.stdout


def chat_with_imported_tools(tour: Tour, command: str) -> None:
    """The JSON agent with its tools imported (from a file, or as a module of the current
    directory without PYTHONPATH); `--llm fake` appended in place of its `local`."""
    if command.endswith(")"):
        command = command[:-1] + " --llm fake)"
    else:
        command += " --llm fake"
    result = tour.run(command, stdin="What's the weather in Paris?\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert "agent> Hello, how can I help?" in result.stdout
    assert FAKE_ANSWER in result.stdout


SESSION_ID = "conv_17c68195533f4beda933"  # the README's example id
STEPS: dict[str, Step] = {
    "make run": make_dry_run(".venv/bin/voxline serve"),
    "source .venv/bin/activate": activate,
    "voxline doctor": doctor,
    'make cli ARGS="doctor"': make_dry_run(".venv/bin/voxline doctor"),
    "voxline chat": chat,
    f"voxline chat --session {SESSION_ID}": chat_session,
    f"make chat SESSION={SESSION_ID}": make_dry_run(
        f".venv/bin/voxline chat --session {SESSION_ID}"
    ),
    "voxline serve": serve,
    "voxline serve --port 8090": serve_on_another_port,
    "make run PORT=8090": make_dry_run(".venv/bin/voxline serve --port 8090"),
    TWILIO[0]: twilio_webhook,
    "voxline chat --llm openai:gpt-4.1-mini": hosted_without_key("OPENAI_API_KEY"),
    "voxline chat --llm anthropic:claude-sonnet-4-5": hosted_without_key("ANTHROPIC_API_KEY"),
    'voxline chat --llm "openai-compatible:http://127.0.0.1:8000/v1#qwen2.5"': self_hosted,
    'voxline chat --llm "openai:gpt-4.1-mini,local"': fallback_without_key,
    "python examples/concierge.py": python_example,
    "voxline agents validate examples/concierge.json --import ./examples/mytools.py": validate,
    "voxline chat --agent examples/concierge.json --import ./examples/mytools.py": (
        chat_with_imported_tools
    ),
    "(cd examples && voxline chat --agent concierge.json --import mytools)": (
        chat_with_imported_tools
    ),
}
SLOW = {"voxline doctor", "python examples/concierge.py"}  # they load the real local models


def cases() -> list[Any]:
    """One case per README command (those run as part of another's session excepted), with
    the skipped ones marked, so the report lists each with its reason."""
    params = []
    for command in readme_commands():
        if command in GROUPED:
            continue
        marks: list[Any] = [pytest.mark.slow] if command in SLOW else []
        if command in SKIPPED:
            marks.append(pytest.mark.skip(reason=f"README: {SKIPPED[command]}"))
        params.append(pytest.param(command, marks=marks, id=command[:70]))
    return params


@pytest.mark.parametrize("command", cases())
def test_readme_command(tour: Tour, command: str) -> None:
    step = STEPS.get(command)
    assert step is not None, (
        f"the README's command {command!r} is neither run nor skipped: add it to STEPS or "
        f"SKIPPED in {Path(__file__).name}"
    )
    step(tour, command)


def test_every_readme_command_is_run_or_skipped() -> None:
    """Both ways: no README command unaccounted for, no entry here that the README lost."""
    readme = set(readme_commands())
    known = set(STEPS) | set(SKIPPED) | set(GROUPED)
    assert readme - known == set(), "add these to STEPS or SKIPPED"
    assert known - readme == set(), "the README no longer has these: remove them here"
    assert not set(STEPS) & set(SKIPPED)
    assert all(GROUPED[line] in STEPS for line in GROUPED)


def test_the_readme_says_activate_once_and_then_plain_voxline() -> None:
    """One way to invoke the CLI: `voxline …` after `source .venv/bin/activate`, said once,
    or the `make` targets; never `.venv/bin/voxline` in a command."""
    assert README.read_text().count("source .venv/bin/activate") == 1
    commands = readme_commands()
    assert not [c for c in commands if ".venv/bin/voxline" in c]
    assert not [c for c in commands if "PYTHONPATH" in c]
