"""A TCP relay a test can cut: a loopback port whose connections are piped to a real server
(PostgreSQL, Redis), so an outage can be made without touching the server or its other
clients. Shared by the broker tests (tests/store) and the outage tests (tests/server)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class TcpRelay:
    """Relays each connection to `host:port`; `cut` drops the current ones, `stop` also refuses
    new ones. Every connection's handler is awaited when the relay stops."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        """Drop every connection made so far; new ones are still relayed."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def stop(self) -> None:
        """Refuse new connections and drop the current ones."""
        assert self._server is not None
        self._server.close()
        self.cut()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
