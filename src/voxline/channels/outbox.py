"""Bounded outboxes: what a call owes its peer, in order, under a ceiling.

Every channel writes to its peer through one ordered queue drained by one writer task, so that
audio and control messages leave in the order they were made. A peer that stops reading (a
network path gone dead before the socket notices, a client stuck in a debugger) would let such
a queue grow by a hundred messages a second for the rest of the call. `BoundedOutbox` holds at
most `limit` ordinary items plus `reserve` essential ones, and has one way in per kind of
message, because what may be given up differs:

- `await push(item)`: audio. Never dropped, since a hole in the middle of speech is worse than a
  late word: the producer waits for room, which is backpressure into the paced speaker. A peer
  that frees no room for `stall` seconds has stopped reading, and the outbox is *abandoned*.
- `offer(item)`: an event the peer can do without (interim text, state, metrics). When full,
  the oldest droppable item queued gives way (or this one, when nothing queued is droppable).
- `offer(item, essential=True)`: a control message the protocol needs (`clear`, `end`, a final
  token). It takes a droppable item's place, else one of the `reserve` slots; when even those
  are taken the peer is hopeless and the outbox is abandoned: never silently dropped.

`coalesce` lets a full outbox merge a new item into the newest queued one instead (text tokens:
nothing is lost and the count does not grow). Abandoning logs one error line, forgets what was
queued, refuses everything after, ends `get` (None) and calls `on_abandon`, whose job is to end
the call. Drops are counted in `dropped` and logged once, then every `DROP_LOG_EVERY`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import structlog

from voxline.telemetry import counters

T = TypeVar("T")
DROP_LOG_EVERY = 100
"""A drop is logged the first time and then every this many: a stuck peer drops dozens a
second, and a line each would bury the log."""


class DropCount:
    """A count of things given up, logged the first time and every `DROP_LOG_EVERY` after."""

    def __init__(self, log: Any, message: str, *, source: str = "", **fields: Any) -> None:
        """`source`: a fixed name under which drops are also counted in the metrics."""
        self.total = 0
        self._log = log
        self._message = message
        self._source = source
        self._fields = fields

    def add(self, count: int = 1) -> None:
        if self._source:
            counters.dropped(self._source, count)
        before, self.total = self.total, self.total + count
        if before == 0 or before // DROP_LOG_EVERY != self.total // DROP_LOG_EVERY:
            self._log.warning(self._message, dropped=self.total, **self._fields)


class BoundedOutbox(Generic[T]):
    """An ordered queue for one peer with at most `limit + reserve` items; see the module doc.

    `peak` is the most items it ever held, so tests (and operators) can see the bound held.
    `clear` and `remove_if` discard on purpose (a barge-in) and count nothing; an item whose
    producer was waiting for room across one of them is discarded too, since it was made
    before the discard and would otherwise go out after it.
    """

    def __init__(
        self,
        name: str,
        *,
        limit: int,
        reserve: int = 8,
        stall: float = 5.0,
        coalesce: Callable[[T, T], T | None] | None = None,
        on_abandon: Callable[[str], None] | None = None,
        log: Any = None,
    ) -> None:
        if limit < 1 or reserve < 0 or stall <= 0:
            raise ValueError("an outbox needs limit >= 1, reserve >= 0 and stall > 0")
        self.name = name
        self.limit = limit
        self.reserve = reserve
        self.stall = stall
        self.peak = 0
        self.coalesced = 0
        self.abandoned: str | None = None  # why, once the peer was given up on
        self._coalesce = coalesce
        self._on_abandon = on_abandon
        self._log = (log or structlog.get_logger("voxline.outbox")).bind(outbox=name)
        self._drops = DropCount(
            self._log, "outbox full: message dropped", source=f"{name} outbox", limit=limit
        )
        self._items: deque[tuple[T, bool]] = deque()  # (item, droppable), oldest first
        self._ready = asyncio.Event()  # something to get, or closed
        self._room = asyncio.Event()  # below the limit, or closed
        self._room.set()
        self._epoch = 0  # bumped by every deliberate discard
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[T]:
        """What is queued, oldest first (for tests and debugging)."""
        return [item for item, _ in self._items]

    @property
    def dropped(self) -> int:
        return self._drops.total

    @property
    def closed(self) -> bool:
        return self._closed

    # -- in ------------------------------------------------------------------------------------
    async def push(self, item: T) -> bool:
        """Queue an item that must not be dropped, waiting for room; False when it was not
        queued (closed, abandoned while waiting, or discarded by a `clear` while waiting)."""
        epoch = self._epoch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stall
        while not self._closed and epoch == self._epoch and len(self._items) >= self.limit:
            if self._evict_droppable():
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.abandon(f"the peer read nothing for {self.stall:g} s")
                break
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), remaining)
        if self._closed or epoch != self._epoch:
            return False
        self._append(item, droppable=False)
        return True

    def offer(self, item: T, *, essential: bool = False) -> bool:
        """Queue an item now; see the module doc for what a full outbox does. False when it
        was not queued (dropped, closed, or the outbox gave up on the peer)."""
        if self._closed:
            return False
        if len(self._items) >= self.limit:
            if self._merge(item):
                return True
            if not self._evict_droppable():
                if not essential:
                    self._drops.add()
                    return False
                if len(self._items) >= self.limit + self.reserve:
                    self.abandon("an essential message found no room")
                    return False
        self._append(item, droppable=not essential)
        return True

    # -- discarding ----------------------------------------------------------------------------
    def remove_if(self, predicate: Callable[[T], bool]) -> int:
        """Discard queued items matching `predicate` (a barge-in takes back unsent audio);
        returns how many went. Not counted as drops: the call meant it."""
        kept = deque(entry for entry in self._items if not predicate(entry[0]))
        removed = len(self._items) - len(kept)
        self._items = kept
        self._epoch += 1
        self._room.set()
        return removed

    def clear(self) -> int:
        return self.remove_if(lambda _: True)

    def close(self) -> None:
        """Nothing more goes in; what is queued still comes out, then `get` returns None."""
        self._closed = True
        self._ready.set()
        self._room.set()

    def abandon(self, reason: str) -> None:
        """Give up on the peer: forget what is queued, refuse everything after, and tell the
        owner, who ends the call. Logged once, as an error: a call is being cut short."""
        if self.abandoned is not None:
            return
        self.abandoned = reason
        unsent = len(self._items)
        self._items.clear()
        self.close()
        self._log.error(
            "peer stopped reading; ending the call",
            reason=reason,
            unsent=unsent,
            dropped=self.dropped,
            limit=self.limit,
        )
        if self._on_abandon is not None:
            self._on_abandon(reason)

    # -- out -----------------------------------------------------------------------------------
    async def get(self) -> T | None:
        """The oldest item, waiting for one; None once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        item, _ = self._items.popleft()
        if len(self._items) < self.limit:
            self._room.set()
        return item

    # -- inside --------------------------------------------------------------------------------
    def _append(self, item: T, *, droppable: bool) -> None:
        self._items.append((item, droppable))
        self.peak = max(self.peak, len(self._items))
        self._ready.set()

    def _evict_droppable(self) -> bool:
        """Drop the oldest droppable item queued, if there is one (counted)."""
        for index, (_, droppable) in enumerate(self._items):
            if droppable:
                del self._items[index]
                self._drops.add()
                return True
        return False

    def _merge(self, item: T) -> bool:
        if self._coalesce is None or not self._items:
            return False
        newest, droppable = self._items[-1]
        merged = self._coalesce(newest, item)
        if merged is None:
            return False
        self._items[-1] = (merged, droppable)
        self.coalesced += 1
        return True
