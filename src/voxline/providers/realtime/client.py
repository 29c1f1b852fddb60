"""`RealtimeClient`: one Realtime WebSocket that stays up for the length of a call.

It knows the wire and the connection, nothing of sessions or turns:

- **Out**: events leave through one ordered outbox and one writer task. The outbox is bounded
  for audio: when the socket is slow (or down, between reconnects) the oldest audio is dropped
  first and counted (`dropped_audio`), because late caller audio is worth less than fresh
  audio, while control events (a truncate, a tool result) are never dropped for room.
- **In**: every server event is parsed and handed over in order through `events()`; the
  connection's own news arrives in the same stream as made-up events
  (`voxline.connection_lost`, `voxline.reconnected`, `voxline.failed`), so the consumer needs
  one loop.
- **Keepalive**: WebSocket pings every `keepalive` seconds; a pong missing for as long counts as
  a dropped socket.
- **Reconnect**: a dropped socket is redialled with capped exponential backoff. Each new
  connection first gets the session configuration again (`session.update`) and then the
  conversation so far (`seed()`, the caller's turn store as `conversation.item.create`s),
  before anything queued; control events queued for the old connection are dropped, since
  the items they name do not exist on the new one. An answer refused for good (401, 403, 404)
  is not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from voxline.providers.realtime import events as wire
from voxline.providers.realtime.config import RealtimeSessionConfig
from voxline.providers.realtime.events import RealtimeEvent, RealtimeProtocolError
from voxline.providers.realtime.registry import RealtimeTarget
from voxline.tasks import put_final
from voxline.telemetry import counters

INBOX_LIMIT = 1024  # server events waiting for the engine; past it the socket read waits

log = structlog.get_logger("voxline.providers.realtime")

Seed = Callable[[], Sequence[Mapping[str, Any]]]
MAX_MESSAGE = 16 * 1024 * 1024  # bytes; OpenAI's own events are far smaller
_PERMANENT = frozenset({400, 401, 403, 404})


class RealtimeConnectError(ConnectionError):
    """The Realtime server could not be reached, or refused us (`permanent`: for good, such as
    a bad key; retrying cannot help)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class RealtimeClient:
    """A Realtime connection with a bounded outbox, keepalive and reconnection."""

    def __init__(
        self,
        target: RealtimeTarget,
        *,
        config: RealtimeSessionConfig | None = None,
        seed: Seed | None = None,
        queue_size: int = 250,
        keepalive: float = 20.0,
        reconnect_attempts: int = 6,
        max_backoff: float = 8.0,
        first_backoff: float = 0.25,
        connect_timeout: float = 10.0,
    ) -> None:
        self.target = target
        self.config = config
        self._seed = seed
        self._queue_size = max(1, queue_size)
        self._keepalive = keepalive
        self._attempts = reconnect_attempts
        self._max_backoff = max_backoff
        self._first_backoff = first_backoff
        self._connect_timeout = connect_timeout
        self._outbox: deque[tuple[dict[str, Any], bool]] = deque()  # (event, is audio)
        self._audio_queued = 0
        self._queued = asyncio.Event()
        # Bounded: a consumer that falls behind slows our reading of the socket (TCP pushes back
        # on the server) instead of growing memory.
        self._inbox: asyncio.Queue[RealtimeEvent | None] = asyncio.Queue(INBOX_LIMIT)
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self.generation = 0  # counts connections: 1 is the first
        self.dropped_audio = 0
        self.dropped_stale = 0
        self.reconnects = 0
        self.sent = 0
        self.log = log.bind(realtime=target.label)

    # -- lifecycle -------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the first connection (configured and seeded); raises `RealtimeConnectError`."""
        ws = await self._dial()
        try:
            await self._prepare(ws)
        except ConnectionClosed as exc:
            raise RealtimeConnectError(f"{self.target.shown()} closed the socket: {exc}") from None
        self._runner = asyncio.create_task(self._run(ws), name="realtime connection")

    async def close(self) -> None:
        """Close the socket and end `events()`; safe to call twice."""
        if self._closing:
            return
        self._closing = True
        runner = self._runner
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        put_final(self._inbox, None)
        if self.dropped_audio or self.reconnects:
            self.log.info(
                "realtime connection closed",
                dropped_audio=self.dropped_audio,
                dropped_stale=self.dropped_stale,
                reconnects=self.reconnects,
                sent=self.sent,
            )

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._closing

    # -- out -------------------------------------------------------------------------------
    def append_audio(self, audio: bytes) -> None:
        """Queue caller audio (in the session's input format) as it arrives."""
        if not audio or self._closing:
            return
        if self._audio_queued >= self._queue_size:
            self._drop_oldest_audio()
        self._outbox.append((wire.append_audio(audio), True))
        self._audio_queued += 1
        self._queued.set()

    def send(self, event: Mapping[str, Any]) -> None:
        """Queue a control event; it is never dropped for room."""
        if self._closing:
            return
        self._outbox.append((dict(event), False))
        self._queued.set()

    def update_session(self, config: RealtimeSessionConfig) -> None:
        """Change the session (now, and on every reconnect)."""
        self.config = config
        self.send(wire.session_update(config.session()))

    def _drop_oldest_audio(self) -> None:
        for index, (_, audio) in enumerate(self._outbox):
            if audio:
                del self._outbox[index]
                self._audio_queued -= 1
                self.dropped_audio += 1
                counters.dropped("realtime audio out")
                if self.dropped_audio == 1 or self.dropped_audio % 250 == 0:
                    self.log.warning(
                        "realtime outbox full: caller audio dropped", dropped=self.dropped_audio
                    )
                return

    # -- in --------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[RealtimeEvent]:
        """Server events in order, with the connection's own news; ends on `close()` or when
        reconnecting has failed for good (after a `voxline.failed` event)."""
        while True:
            event = await self._inbox.get()
            if event is None:
                return
            yield event

    # -- the connection --------------------------------------------------------------------
    async def _dial(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.target.api_key}"} if self.target.api_key else {}
        try:
            return await connect(
                self.target.url,
                additional_headers=headers,
                open_timeout=self._connect_timeout,
                ping_interval=self._keepalive,
                ping_timeout=self._keepalive,
                max_size=MAX_MESSAGE,
                user_agent_header="voxline",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise RealtimeConnectError(
                f"{self.target.shown()} refused the socket: HTTP {status}",
                permanent=status in _PERMANENT,
            ) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            reason = str(exc) or type(exc).__name__
            raise RealtimeConnectError(f"{self.target.shown()} unreachable: {reason}") from None

    async def _prepare(self, ws: ClientConnection) -> None:
        """A new connection gets the session and the conversation so far, before anything."""
        self._ws = ws
        self.generation += 1
        if self.config is not None:
            await ws.send(json.dumps(wire.session_update(self.config.session())))
        items = list(self._seed()) if self._seed is not None else []
        for item in items:
            await ws.send(json.dumps(item))
        self.sent += len(items) + (self.config is not None)
        self.log.info(
            "realtime connected",
            url=self.target.shown(),
            generation=self.generation,
            seeded=len(items),
        )

    async def _run(self, ws: ClientConnection) -> None:
        current: ClientConnection | None = ws
        while current is not None:
            reason = await self._serve(current)
            if self._closing:
                return
            self.log.warning("realtime socket dropped", reason=reason, generation=self.generation)
            await self._inbox.put(RealtimeEvent(wire.CONNECTION_LOST, {"reason": reason}))
            current = await self._redial()

    async def _serve(self, ws: ClientConnection) -> str:
        """Pump both ways until the socket drops; returns why it did."""
        writer = asyncio.create_task(self._write(ws))
        reader = asyncio.create_task(self._read(ws))
        try:
            await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            writer.cancel()
            reader.cancel()
            await asyncio.gather(writer, reader, return_exceptions=True)
        with contextlib.suppress(Exception):
            await ws.close()
        self._ws = None
        code = ws.close_code
        return f"closed ({code})" if code is not None else "connection lost"

    async def _write(self, ws: ClientConnection) -> None:
        while True:
            while not self._outbox:
                self._queued.clear()
                await self._queued.wait()
            event, audio = self._outbox[0]
            try:
                await ws.send(json.dumps(event))
            except ConnectionClosed:
                return  # the event stays queued for the next connection
            self._outbox.popleft()
            if audio:
                self._audio_queued -= 1
            self.sent += 1

    async def _read(self, ws: ClientConnection) -> None:
        bad = 0
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                try:
                    event = wire.parse_server_event(frame)
                except RealtimeProtocolError as exc:
                    bad += 1
                    if bad == 1:
                        self.log.warning("realtime frame ignored", error=str(exc))
                    continue
                await self._inbox.put(event)

    async def _redial(self) -> ClientConnection | None:
        self._forget_stale()
        for attempt in range(1, self._attempts + 1):
            delay = min(self._max_backoff, self._first_backoff * 2 ** (attempt - 1))
            await asyncio.sleep(delay)
            try:
                ws = await self._dial()
                await self._prepare(ws)
            except RealtimeConnectError as exc:
                self.log.warning("realtime reconnect failed", attempt=attempt, error=str(exc))
                if exc.permanent:
                    break
                continue
            except ConnectionClosed:
                continue
            self.reconnects += 1
            await self._inbox.put(RealtimeEvent(wire.RECONNECTED, {"attempt": attempt}))
            return ws
        self.log.error("realtime connection lost for good", attempts=self._attempts)
        await self._inbox.put(RealtimeEvent(wire.FAILED, {}))
        put_final(self._inbox, None)
        return None

    def _forget_stale(self) -> None:
        """Control events queued for the old connection name its items: drop them."""
        kept = deque(item for item in self._outbox if item[1])
        self.dropped_stale += len(self._outbox) - len(kept)
        self._outbox = kept
