"""A redis-server of the test's own on a free loopback port, which the test may kill, freeze and
restart on the same port: outages must not touch the shared Redis other tests use."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.ports import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
HAVE_REDIS_SERVER = Path(REDIS_SERVER).exists()


class PrivateRedis:
    """`start()` / `kill()` / `freeze()` / `thaw()`; the URL stays the same across restarts."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start (or restart) the server and return once it answers PING."""
        assert self._process is None, "already running"
        self._process = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)
        try:
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(RedisError, OSError):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """Crash the server (SIGKILL): every connection to it drops at once."""
        process, self._process = self._process, None
        if process is not None:
            if process.returncode is None:
                process.kill()
            await process.wait()

    def freeze(self) -> None:
        """Stop the process without closing its sockets: connections stay up, nobody answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)


@contextlib.asynccontextmanager
async def private_redis(workdir: Path) -> AsyncIterator[PrivateRedis]:
    if not HAVE_REDIS_SERVER:
        pytest.skip(f"no redis-server at {REDIS_SERVER}")
    server = PrivateRedis(workdir)
    await server.start()
    try:
        yield server
    finally:
        if server._process is not None:
            server.thaw()
        await server.kill()
