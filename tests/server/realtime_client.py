"""A Realtime client for the endpoint tests: every server event of one socket, kept as JSON.

`sdk_socket` is the official `openai` package's own Realtime connection (GA, or beta with the
`OpenAI-Beta` header), `raw_socket` a bare WebSocket for what the SDK will not send (broken
JSON, binary frames). Either way a reader task keeps each event, parsed by the SDK too when it
is the SDK's socket, with its size on the wire, and tests wait on what they expect.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from openai import AsyncOpenAI
from websockets.asyncio.client import connect

from tests.server.conftest import API_KEY
from tests.server.twilio_emulator import WAIT

RATE = 24000  # the Realtime default: PCM16 at 24 kHz
MiB = 1 << 20


@dataclass
class Events:
    """Every server event of one socket, as JSON, with its size on the wire."""

    recv: Callable[[], Awaitable[bytes | str]]
    parse: Callable[[bytes | str], Any] | None = None  # the SDK's own parser, when given
    events: list[dict[str, Any]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                raw = await self.recv()
                self.sizes.append(len(raw.encode() if isinstance(raw, str) else raw))
                if self.parse is not None:
                    self.parse(raw)  # the SDK understands every event
                self.events.append(json.loads(raw))
                self._changed.set()
        self._changed.set()

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == kind and all(e.get(k) == v for k, v in match.items())
        ]

    async def wait_for(self, check: Callable[[], Any]) -> Any:
        async with asyncio.timeout(WAIT):
            while not (result := check()):
                if self._task is not None and self._task.done():
                    raise AssertionError(
                        f"socket closed; events: {[e['type'] for e in self.events]}"
                    )
                self._changed.clear()
                await self._changed.wait()
        return result

    async def next(self, kind: str, after: int = 0, **match: Any) -> dict[str, Any]:
        """The first `kind` event from position `after` on that has the fields `match`."""

        def found() -> dict[str, Any] | None:
            for event in self.events[after:]:
                if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                    return event
            return None

        event: dict[str, Any] = await self.wait_for(found)
        return event

    async def since(self, seen: int) -> list[dict[str, Any]]:
        """The events after the first `seen`, once there is one."""
        events: list[dict[str, Any]] = await self.wait_for(lambda: self.events[seen:])
        return events

    def audio(self, response_id: str, kind: str = "response.output_audio.delta") -> bytes:
        return b"".join(
            base64.b64decode(e["delta"]) for e in self.of(kind, response_id=response_id)
        )

    def types(self, start: int = 0, end: int | None = None) -> list[str]:
        return [e["type"] for e in self.events[start:end]]


@contextlib.asynccontextmanager
async def sdk_socket(
    base: str, agent: str, *, beta: bool = False, key: str = API_KEY
) -> AsyncIterator[tuple[Any, Events]]:
    """The official SDK's Realtime connection to `base`, with an event reader running. (The
    beta client always dials wss:// from the base URL, so it is given the ws:// one.)"""
    websocket = base.replace("http://", "ws://") + "/v1" if beta else None
    client = AsyncOpenAI(base_url=f"{base}/v1", api_key=key, websocket_base_url=websocket)
    realtime = client.beta.realtime if beta else client.realtime
    async with realtime.connect(model=agent) as conn:
        events = Events(conn.recv_bytes, conn.parse_event)
        events.start()
        yield conn, events


@contextlib.asynccontextmanager
async def raw_socket(base: str, agent: str) -> AsyncIterator[tuple[Any, Events]]:
    url = base.replace("http://", "ws://") + f"/v1/realtime?model={agent}"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with connect(url, additional_headers=headers, max_size=MiB) as ws:
        events = Events(ws.recv)
        events.start()
        yield ws, events


def pcm_b64(pcm: npt.NDArray[np.int16]) -> str:
    return base64.b64encode(pcm.astype("<i2").tobytes()).decode()


def level(amplitude: int, seconds: float) -> npt.NDArray[np.int16]:
    return np.full(round(seconds * RATE), amplitude, dtype=np.int16)
