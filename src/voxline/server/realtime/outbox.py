"""Server events waiting for the socket: one ordered, bounded queue.

One queue keeps audio and events in order (a `response.done` must follow the audio deltas it
ends, and a barge-in must drop the audio not yet sent, at once, as `AudioTransport.clear`
requires). A client that stops reading must not make the server hold audio without end: past
`max_audio` queued deltas new ones are dropped and counted, and past `max_events` in all the
client is too far behind to ever catch up, so `overflowed` tells the writer to close the socket.
"""

from __future__ import annotations

import asyncio
from collections import deque

import structlog

log = structlog.get_logger("voxline.realtime")


class Outbox:
    def __init__(self, *, max_audio: int = 600, max_events: int = 20_000) -> None:
        self._items: deque[tuple[str, bool]] = deque()  # (event, is audio)
        self._ready = asyncio.Event()
        self._max_audio = max_audio
        self._max_events = max_events
        self._audio = 0
        self._closed = False
        self.dropped = 0
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: str, *, audio: bool = False) -> None:
        if self._closed:
            return
        if audio and self._audio >= self._max_audio:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 1000 == 0:
                log.warning("client reads too slowly: audio dropped", dropped=self.dropped)
            return
        if len(self._items) >= self._max_events:
            self.overflowed = True
            self._ready.set()
            return
        self._audio += audio
        self._items.append((event, audio))
        self._ready.set()

    def drop_audio(self) -> int:
        """Remove every queued audio delta (other events stay); returns how many went."""
        kept = deque(entry for entry in self._items if not entry[1])
        dropped = len(self._items) - len(kept)
        self._items = kept
        self._audio = 0
        return dropped

    def close(self) -> None:
        """Nothing more goes in; what is queued still comes out, then `get` returns None."""
        self._closed = True
        self._ready.set()

    async def get(self) -> str | None:
        """The next event; None once closed and drained, or when the client fell too far
        behind (`overflowed`)."""
        while not self._items or self.overflowed:
            if self._closed or self.overflowed:
                return None
            self._ready.clear()
            await self._ready.wait()
        event, audio = self._items.popleft()
        self._audio -= audio
        return event
