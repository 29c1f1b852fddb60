"""The `voxline` command line: chat with an agent, inspect agents, check the local models."""

from __future__ import annotations

import asyncio
import errno
import importlib
import importlib.util
import json
import logging
import os
import socket
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import structlog
import typer

from voxline.agents.default import default_agent
from voxline.agents.runtime import Agent
from voxline.agents.spec import agent_json_schema, load_agent_spec
from voxline.logging import configure_logging
from voxline.providers.llm.base import ConfigurationError, LLMError
from voxline.settings import Settings, load_settings

if TYPE_CHECKING:
    from voxline.store.base import ApiKeyRecord, PlatformStore

app = typer.Typer(
    help="voxline: real-time voice AI agents on the phone, SMS, the browser and the terminal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
agents_app = typer.Typer(help="Inspect and validate agent definitions.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
keys_app = typer.Typer(help="Manage API keys of the REST API.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

AgentOpt = Annotated[
    Path | None, typer.Option("--agent", "-a", help="Agent JSON file (default: the built-in one).")
]
LLMOpt = Annotated[str | None, typer.Option("--llm", help="LLM spec, e.g. openai:gpt-4.1-mini.")]
ImportOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        "-i",
        help="Module in the current directory or on the path (mytools), or a Python file "
        "(./mytools.py), imported first so its @voxline.tool functions register (repeatable).",
    ),
]
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Show log lines and tracebacks, not just one-line errors.")
]


def fail(message: str) -> NoReturn:
    """Print one actionable line and exit non-zero: configuration errors are not tracebacks."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _settings(**flags: Any) -> Settings:
    settings = load_settings(**flags)
    configure_logging(
        settings.log_level,
        settings.log_json,
        redact_pii=settings.redact_pii_in_logs,
        settings=settings,  # so the secrets given as flags are masked by value too
    )
    return settings


def import_modules(names: list[str] | None, *, debug: bool = False) -> None:
    """Import what `--import` names, so the tools it defines register by name.

    `voxline` is a console script, so unlike `python -m` the current directory is not on
    `sys.path` and `--import mytools` would not find `./mytools.py`: it is put first, as Python
    does for `python -m`. A name that looks like a file (`./mytools.py`, `tools/weather.py`) is
    imported from that file, with its folder on the path for the modules beside it. A failing
    import is one line (the module's own error); `--debug` shows its traceback."""
    for name in names or []:
        try:
            if name.endswith(".py") or "/" in name or os.sep in name:
                _import_file(name)
            else:
                _put_cwd_on_path()
                importlib.import_module(name)
        except typer.Exit:
            raise
        except ModuleNotFoundError as exc:
            if debug:
                raise
            if exc.name is not None and name.split(".")[0] == exc.name.split(".")[0]:
                fail(
                    f"--import {name}: no module {name!r} in {Path.cwd()} or on the Python "
                    f"path; give its file instead: --import ./{name.replace('.', '/')}.py"
                )
            fail(f"--import {name}: {exc}")
        except Exception as exc:
            if debug:
                raise
            fail(f"--import {name}: {type(exc).__name__}: {exc} (--debug shows the traceback)")


def _put_cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import_file(name: str) -> None:
    path = Path(name).expanduser()
    if not path.is_file():
        fail(f"--import {name}: no such file")
    path = path.resolve()
    module_name = path.stem if path.suffix == ".py" else path.name
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        if getattr(loaded, "__file__", None) == str(path):
            return  # imported already (e.g. by another --import)
        module_name = f"_voxline_import_{module_name}"  # never shadow a module of that name
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        fail(f"--import {name}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise


def build_agent(
    path: Path | None, llm: str | None, imports: list[str] | None, *, debug: bool = False
) -> Agent:
    import_modules(imports, debug=debug)
    if path is None:
        agent = default_agent()
        return (
            Agent(agent.spec.model_copy(update={"llm": llm}), tools=agent.tools()) if llm else agent
        )
    spec = load_agent_spec(path)
    return Agent(spec.model_copy(update={"llm": llm}) if llm else spec)


@app.command()
def chat(
    agent: AgentOpt = None,
    llm: LLMOpt = None,
    session: Annotated[str | None, typer.Option(help="Resume this conversation id.")] = None,
    database: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
    imports: ImportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Chat with an agent in the terminal; replies stream, tools and approvals show inline."""
    from voxline.chat import run_chat

    settings = _settings(database_url=database, log_level="INFO" if debug else "WARNING")
    if not debug:
        _errors_in_one_line()
    try:
        runtime = build_agent(agent, llm, imports, debug=debug)
        asyncio.run(run_chat(runtime, settings, session, debug=debug))
    except (ConfigurationError, LLMError) as exc:
        fail(str(exc))
    except (KeyboardInterrupt, EOFError):
        typer.echo()
    except typer.Exit:
        raise
    except Exception as exc:
        if debug:
            raise
        fail(f"{type(exc).__name__}: {exc} (--debug shows the traceback)")


def _errors_in_one_line() -> None:
    """Log lines that carry a traceback are dropped: the chat prints each error of the
    conversation itself, in one line, and a traceback on the terminal (~100 lines for an
    unreachable server) buries the conversation. Warnings without one still show. `--debug`
    keeps everything."""
    structlog.configure(processors=[_drop_tracebacks, *structlog.get_config()["processors"]])
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: not record.exc_info)


def _drop_tracebacks(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if event.get("exc_info"):
        raise structlog.DropEvent
    return event


@agents_app.command("schema")
def agents_schema() -> None:
    """Print the JSON Schema of an agent definition."""
    typer.echo(json.dumps(agent_json_schema(), indent=2))


@agents_app.command("validate")
def agents_validate(path: Path, imports: ImportOpt = None) -> None:
    """Check an agent JSON file and say what is wrong, field by field: the schema, then that
    its tools are registered (import their modules with --import) and its providers exist."""
    from voxline.agents.checks import check_runnable

    settings = _settings(log_level="ERROR")
    import_modules(imports)
    try:
        spec = load_agent_spec(path)
    except ConfigurationError as exc:
        fail(str(exc))
    findings = check_runnable(spec, settings)
    for finding in findings:
        kind, colour = ("error", typer.colors.RED) if finding.fatal else ("warning", None)
        typer.secho(f"{kind}: {path}: {finding}", fg=colour, err=True)
    errors = sum(finding.fatal for finding in findings)
    if errors:
        typer.secho(f"{path}: {errors} problem(s); agent {spec.name!r} would not run", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: agent {spec.name!r}")


@app.command()
def doctor(
    load: Annotated[bool, typer.Option(help="Load each local model to time it.")] = True,
) -> None:
    """Report, for each role (LLM, STT, TTS, VAD), the provider, its model and its load time."""
    from voxline.doctor import collect_report, render

    typer.echo(render(collect_report(_settings(log_level="WARNING"), load=load)))


@app.command()
def version() -> None:
    """Print the installed version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("voxline"))


@app.command()
def serve(
    agents: Annotated[
        list[Path] | None,
        typer.Option("--agents", help="Agent JSON file or directory of them (repeatable)."),
    ] = None,
    default: Annotated[
        str | None, typer.Option("--default-agent", help="Agent behind /twilio/voice and /sms.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    public_url: Annotated[
        str | None, typer.Option("--public-url", help="The server's URL as Twilio sees it.")
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option("--grace", help="Seconds calls in progress may finish on shutdown."),
    ] = None,
    database: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
    imports: ImportOpt = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Server processes sharing the port (more than one needs VOXLINE_REDIS_URL).",
        ),
    ] = 1,
) -> None:
    """Serve agents on Twilio voice (ConversationRelay) and SMS, with the REST API under /api
    and the approvals API."""
    from voxline.server import ServerConfig, build_server, create_app, load_agents

    settings = _settings(
        server_host=host,
        server_port=port,
        public_url=public_url,
        shutdown_grace_period=grace,
        database_url=database,
    )
    if workers > 1 and not settings.redis_url:
        fail(
            "--workers needs VOXLINE_REDIS_URL: debug feeds, client tools and text for live "
            "calls cross between workers through Redis"
        )
    _check_port_free(settings.server_host, settings.server_port)
    builtin = build_agent(None, None, imports)  # the default agent, after the tool imports
    try:
        hosted: list[Any] = load_agents(agents or [])
        if builtin.name not in {a.name for a in hosted}:
            hosted.append(builtin)
        config = ServerConfig(agents=hosted, settings=settings, default_agent=default)
        app_ = create_app(config)
    except ConfigurationError as exc:
        fail(str(exc))
    if not settings.twilio_validate_signatures:
        typer.secho(
            "WARNING: Twilio signature checks are OFF. Anyone who finds this server can call "
            "your agents and run their tools. Local development only!",
            fg=typer.colors.RED,
            bold=True,
            err=True,
        )
    from voxline.logging import uvicorn_log_config

    log_config = uvicorn_log_config()  # its access log too on stderr, not stdout
    if workers == 1:
        build_server(
            app_, host=settings.server_host, port=settings.server_port, log_config=log_config
        ).run()
        return
    from voxline.server.workers import bind, serve_workers
    from voxline.telemetry.multiproc import prepare as prepare_metrics

    prepare_metrics()  # before forking: workers share one metrics directory (/metrics sums it)

    def run_worker(sock: Any) -> None:  # each worker builds its own app: nothing is shared
        server = build_server(
            create_app(config),
            host=settings.server_host,
            port=settings.server_port,
            log_config=log_config,
        )
        server.run(sockets=[sock])

    sock = bind(settings.server_host, settings.server_port)
    raise typer.Exit(serve_workers(run_worker, sock, workers))


def _check_port_free(host: str, port: int) -> None:
    """Fail in one line, before any model loads, when the port is taken: uvicorn would log
    "address already in use" after start-up and exit, without saying how to pick another."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            other = port + 1 if port < 65535 else 8090
            if "VOXLINE_SERVER_PORT" in os.environ:
                how = f"VOXLINE_SERVER_PORT is set and wins over --port: set it to {other}"
            else:
                how = f"`voxline serve --port {other}`, `make run PORT={other}`"
            if exc.errno == errno.EADDRINUSE:
                fail(
                    f"{host}:{port} is already in use (another voxline serve?); "
                    f"choose another port: {how}"
                )
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {how}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    database: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from voxline.server.api.auth import create_api_key

    async def create() -> tuple[str, str]:
        store = await _platform_store(database)
        try:
            token, record = await create_api_key(store, name)
        finally:
            await store.close()
        return token, record.id

    token, key_id = asyncio.run(create())
    typer.echo(token)
    typer.secho(
        f"created key {key_id} ({name}); the key above is shown only now", fg="green", err=True
    )


@keys_app.command("list")
def keys_list(
    database: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
) -> None:
    """List API keys (id, prefix, name, state); keys themselves are never shown."""

    async def load() -> list[ApiKeyRecord]:
        store = await _platform_store(database)
        try:
            return list(await store.list_api_keys())
        finally:
            await store.close()

    for record in asyncio.run(load()):
        state = "revoked" if record.revoked else "active"
        typer.echo(f"{record.id}\t{record.prefix}…\t{state}\t{record.name}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `voxline keys list`.")],
    database: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
) -> None:
    """Revoke an API key: requests with it are refused from now on."""

    from voxline.server.api.auth import revoke_api_key

    async def revoke() -> bool:
        store = await _platform_store(database)
        try:
            return await revoke_api_key(store, key_id)
        finally:
            await store.close()

    if not asyncio.run(revoke()):
        fail(f"no API key with id {key_id!r}")
    typer.echo(f"revoked {key_id}")


async def _platform_store(database: str | None) -> PlatformStore:
    from voxline.store.factory import open_store

    return await open_store(settings=_settings(database_url=database, log_level="WARNING"))


@app.command()
def cleanup(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete history idle for longer, e.g. 7d, 12h.")
    ],
    database: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
) -> None:
    """Delete conversations (turns and approvals too) with no activity for a while."""
    from voxline.server.retention import expire_history, parse_age

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        fail(str(exc))
    settings = _settings(database_url=database)
    deleted = asyncio.run(expire_history(settings, age))
    typer.echo(f"deleted {deleted} conversation(s) idle for more than {older_than}")


@app.command()
def simulate(
    caller: Annotated[Path, typer.Argument(help="WAV file of the caller (any rate, mono/stereo).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the agent's audio.")],
    fast: Annotated[
        bool, typer.Option("--fast", help="Run on virtual time: as fast as the models allow.")
    ] = False,
    greet: Annotated[bool, typer.Option(help="Speak the agent's greeting first.")] = False,
    agent: AgentOpt = None,
    llm: LLMOpt = None,
    imports: ImportOpt = None,
) -> None:
    """Play a recorded caller into an agent; write the agent's side of the call and print the
    transcript and per-turn latencies."""
    from voxline.audio import AudioFormatError, read_wav, write_wav
    from voxline.providers.realtime.registry import is_realtime_spec
    from voxline.simulate import render, simulate_call
    from voxline.voice.providers import load_speech_providers

    settings = _settings(log_level="WARNING")
    try:
        recording = read_wav(caller)
    except AudioFormatError as exc:
        fail(f"{caller}: {exc}")
    except OSError as exc:
        fail(f"cannot read {caller}: {exc.strerror or exc}")
    runtime = build_agent(agent, llm, imports)

    async def run() -> Any:
        from voxline.chat import LiveTimer  # a live clock on a terminal: minutes of silence

        speech = None
        if not is_realtime_spec(runtime.spec.llm):  # a Realtime model hears and speaks itself
            async with LiveTimer(sys.stderr, "loading the speech models…"):
                # A recording at 8 kHz is a phone call: the recognizer picked for phone audio.
                phone = recording.sample_rate <= 8000
                speech = await load_speech_providers(
                    runtime.spec,
                    vad=settings.vad,
                    settings=settings,
                    channel="phone" if phone else "wideband",
                )
        async with LiveTimer(sys.stderr, f"playing {caller.name} to the agent…"):
            return await simulate_call(
                recording, runtime, speech, settings=settings, fast=fast, greet=greet
            )

    try:
        result = asyncio.run(run())
    except (ConfigurationError, LLMError) as exc:
        fail(str(exc))
    write_wav(out, result.audio, result.sample_rate)
    typer.echo(render(result, fast=fast))
    typer.echo(f"\nwrote {out} ({len(result.audio) / result.sample_rate:.1f} s)")


@app.command()
def talk(
    agent: AgentOpt = None,
    llm: LLMOpt = None,
    imports: ImportOpt = None,
    input_device: Annotated[
        str | None, typer.Option("--input", help="Microphone: index or name (voxline devices).")
    ] = None,
    output_device: Annotated[
        str | None, typer.Option("--output", help="Speaker: index or name (voxline devices).")
    ] = None,
    speakers: Annotated[
        bool,
        typer.Option(
            "--speakers",
            help="No headphones: mute the microphone while the agent talks (no barge-in).",
        ),
    ] = False,
) -> None:
    """Talk with an agent through the microphone and speaker (headphones recommended)."""
    from voxline.channels.local_audio import AudioDeviceError, run_talk

    settings = _settings(log_level="WARNING")
    runtime = build_agent(agent, llm, imports)
    try:
        asyncio.run(
            run_talk(
                runtime,
                settings,
                input_device=_device_arg(input_device),
                output_device=_device_arg(output_device),
                half_duplex=speakers,
            )
        )
    except (AudioDeviceError, ConfigurationError, LLMError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo()


def _device_arg(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


@app.command()
def devices() -> None:
    """List the audio devices `voxline talk` can use."""
    from voxline.channels.local_audio import AudioDeviceError, list_devices

    try:
        found = list_devices()
    except AudioDeviceError as exc:
        fail(str(exc))
    if not found:
        fail("no audio devices found")
    for device in found:
        marks = ("<in " if device.default_input else "") + ("<out" if device.default_output else "")
        typer.echo(
            f"{device.index:>3}  {device.name[:40]:<40}  in {device.inputs:>2}  "
            f"out {device.outputs:>2}  {device.sample_rate:>6} Hz  {marks}"
        )


def main() -> None:
    try:
        app()
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
