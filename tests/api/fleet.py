"""The fleet the multi-worker tests run: two `voxline serve` processes on one PostgreSQL and one
Redis, and what those workers import.

The workers import this module (`--import`), which, only there (`PLUGIN_ENV` set), registers a
scripted model (`fleet` LLM prefix) and a tool that needs approval and reports every run to a
loopback counter in the test process: what the tool really did, across workers, is counted where
the test can see it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ApiClient
from tests.ports import free_port
from tests.server.twilio_emulator import PUBLIC, Twilio
from voxline.tools.base import RunContext

PLUGIN_ENV = "VOXLINE_FLEET_TEST_COUNTER"  # the counter's URL; set only in the workers
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0  # seconds a worker may take to answer /health
TEST_LIMIT = 45.0  # seconds any one test may run

CHECKING = "Let me check that with a colleague."
BOOKED = "Your table is booked."
DECLINED = "Sorry, the booking was declined."
SLOW_WORDS = 80  # words of the slow reply, one every SLOW_DELAY seconds
SLOW_DELAY = 0.15


# -- what the workers run -------------------------------------------------------------------


def _install_plugin(counter_url: str) -> None:
    """In a worker: the scripted model and the counted tool (never in the test process)."""
    from voxline import tool
    from voxline.providers.llm.base import LLM, LLMRequest
    from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
    from voxline.providers.llm.registry import register_llm
    from voxline.settings import Settings

    @tool(needs_approval=True, timeout=10)
    async def book_table(guests: int, ctx: RunContext) -> str:
        """Book a table.

        Args:
            guests: How many people.
        """
        report = {"conversation": ctx.conversation_id, "guests": guests, "pid": os.getpid()}
        async with httpx.AsyncClient(timeout=5) as client:
            (await client.post(counter_url, json=report)).raise_for_status()
        return f"booked a table for {guests}"

    def respond(request: LLMRequest) -> FakeReply:
        """Stateless, so every worker and every session answers alike."""
        last = request.messages[-1]
        content = last.content or ""
        if last.role == "tool":
            if content.startswith("booked"):
                return FakeReply(BOOKED)
            return FakeReply(DECLINED if "declined" in content else CHECKING)
        if content.startswith("book "):
            guests = int(content.split()[1])
            return FakeReply(tool_calls=[FakeToolCall("book_table", {"guests": guests})])
        if content.startswith("stall"):
            return FakeReply("too late", ttft=60)
        if content.startswith("slow"):
            words = [f"word{i}" for i in range(SLOW_WORDS)]
            return FakeReply(" ".join(words), token_delay=SLOW_DELAY)
        if content.startswith("recap"):
            heard = [m.content or "" for m in request.messages if m.role == "user"]
            return FakeReply("heard " + " | ".join(heard))
        return FakeReply(f"reply to {content} done", token_delay=0.02)

    def scripted(argument: str, settings: Settings, /, **options: Any) -> LLM:
        return FakeLLM(respond, label="fleet", **options)

    register_llm("fleet", scripted)
    assert book_table.name == "book_table"


if counter := os.environ.get(PLUGIN_ENV):
    _install_plugin(counter)


# -- the fleet ------------------------------------------------------------------------------


class Counter:
    """A loopback HTTP server that records each POSTed JSON body: one per tool run."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        lock = threading.Lock()
        runs = self.runs

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with lock:
                    runs.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/ran"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def runs_for(self, conversation_id: str) -> list[dict[str, Any]]:
        return [run for run in list(self.runs) if run["conversation"] == conversation_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Fleet:
    database: str
    env: dict[str, str]
    logs: Path
    counter: Counter
    ports: list[int] = field(default_factory=lambda: [free_port(), free_port()])
    processes: list[subprocess.Popen[bytes] | None] = field(default_factory=lambda: [None, None])

    @property
    def bases(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def clients(self) -> tuple[ApiClient, ApiClient]:
        one, two = (ApiClient(base, Twilio(base)) for base in self.bases)
        return one, two

    def start(self, index: int) -> None:
        port = self.ports[index]
        log = (self.logs / f"worker-{index}-{port}.log").open("a")
        self.processes[index] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voxline.cli",
                "serve",
                "--port",
                str(port),
                "--db",
                self.database,
                "--public-url",
                PUBLIC,
                "--import",
                __name__,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()

    def said(self) -> str:
        """Everything the workers have logged so far."""
        return "".join(path.read_text() for path in sorted(self.logs.glob("worker-*.log")))

    def alive(self, index: int) -> bool:
        process = self.processes[index]
        return process is not None and process.poll() is None

    def kill(self, index: int) -> None:
        """SIGKILL: no drain, no flush, no goodbye."""
        process = self.processes[index]
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        running = [p for p in self.processes if p is not None and p.poll() is None]
        for process in running:
            process.terminate()
        for process in running:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    async def ready(self) -> None:
        """Both workers up (restarting one an earlier test killed) and healthy."""
        for index in range(2):
            if not self.alive(index):
                self.start(index)
        for index, base in enumerate(self.bases):
            await wait_healthy(base, self, index)


async def wait_healthy(base: str, fleet: Fleet, index: int) -> None:
    async with asyncio.timeout(START_TIMEOUT), httpx.AsyncClient(base_url=base) as client:
        while True:
            if not fleet.alive(index):
                log = "\n".join(p.read_text() for p in fleet.logs.glob(f"worker-{index}-*.log"))
                pytest.fail(f"worker {index} exited at start:\n{log[-3000:]}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
