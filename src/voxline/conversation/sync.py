"""Write-behind persistence of turns: the conversation mutates memory, a task catches up the store.

A streaming reply bumps its bot turn dozens of times a second; writing each version would put a
database round trip on the audio path and flood the store. Instead the bus handlers only mark a
turn dirty (a dict assignment, never an await), and a single background task coalesces a burst
into one batched `write_turns`. Dirtiness is measured by version, not by events: a turn is clean
only when the version last written equals the version in memory, so a change racing an in-flight
write is written again, and a failed write leaves everything dirty for the retry.

The conversation row: the store creates a bare one the first time turns arrive; pass
`conversation=` to have its agent, subject and channel upserted before the first turn batch.

`transform=`: what is written instead of each record (an agent that keeps personal data out of
its stored transcripts masks them here, while the turns in memory stay as said). It must keep
the id, seq and version, which the store's guards compare.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from voxline.conversation.turns import Turn
from voxline.events import EventBus
from voxline.store.base import ConversationRecord, Store
from voxline.store.errors import SeqConflictError
from voxline.telemetry import counters

log = structlog.get_logger("voxline.sync")


class TurnSync:
    """Subscribes to a bus's turn events and keeps `store` equal to the in-memory turns."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        conversation: ConversationRecord | None = None,
        coalesce: float = 0.05,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        on_conflict: Callable[[], Awaitable[None]] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self._store = store
        self._transform = transform
        self._coalesce = coalesce
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._conversation = conversation
        # Called when a write finds a position taken by another writer: the owner of the turns
        # renumbers the unwritten ones, and the write is tried again at once.
        self._on_conflict = on_conflict
        self._dirty: dict[str, Turn] = {}
        self._deleted: dict[str, str] = {}  # turn id -> conversation id
        self._written: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Subscribed now, not in start(), so no change between construction and start is missed.
        self._unsubscribe: list[Callable[[], None]] = [
            bus.on("turn_added", self._on_changed),
            bus.on("turn_updated", self._on_changed),
            bus.on("turn_deleted", self._on_deleted),
        ]
        if conversation is not None:
            self._mark()
        else:
            self._idle.set()

    # -- bus handlers: O(1), synchronous, never raise into the conversation ----------------
    def _on_changed(self, turn: Turn, **_: Any) -> None:
        self._deleted.pop(turn.id, None)
        self._dirty[turn.id] = turn
        self._mark()

    def _on_deleted(self, turn: Turn, **_: Any) -> None:
        self._dirty.pop(turn.id, None)
        self._deleted[turn.id] = turn.conversation_id
        self._mark()

    def _mark(self) -> None:
        self._idle.clear()
        self._wake.set()

    # -- public API ------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records not yet durable: dirty turns, unwritten deletes and the conversation row."""
        return len(self._dirty) + len(self._deleted) + (self._conversation is not None)

    @property
    def pending_deletes(self) -> set[str]:
        """Turns deleted in memory whose delete the store has not taken yet."""
        return set(self._deleted)

    def last_written(self, turn_id: str) -> int | None:
        """The version of `turn_id` the store holds, as far as this sync knows."""
        return self._written.get(turn_id)

    def start(self) -> None:
        """Start the background writer on the running loop; idempotent."""
        if self._closed:
            raise RuntimeError("TurnSync is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="voxline-turn-sync")

    async def flush(self) -> None:
        """Return once everything changed so far is written (retrying failures as long as it takes).

        Wrap it in `asyncio.timeout` where a dead store must not hold up shutdown forever.
        """
        if self._task is None:
            raise RuntimeError("TurnSync.flush() before start()")
        while not self._idle.is_set():
            idle = asyncio.ensure_future(self._idle.wait())
            try:
                await asyncio.wait({idle, self._task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()
            if self._task.done():
                self._task.result()  # re-raise what killed the writer
                raise RuntimeError("TurnSync writer stopped with changes still pending")

    async def close(self) -> None:
        """Flush, unsubscribe and stop the writer. The store stays open: the caller owns it."""
        if self._closed:
            return
        self.start()
        await self.flush()
        self._closed = True
        for off in self._unsubscribe:
            off()
        self._unsubscribe.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the writer ------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._coalesce)
            self._wake.clear()
            await counters.write_behind(self._push_until_done(), waited=self._coalesce)
            if self.pending:
                self._wake.set()
            else:
                self._idle.set()

    async def _push_until_done(self) -> None:
        """Push until a push succeeds, backing off exponentially; partial progress is kept."""
        failures = conflicts = 0
        while True:
            try:
                await self._push()
            except Exception as exc:
                if isinstance(exc, SeqConflictError) and self._on_conflict is not None:
                    conflicts += 1
                    log.info("turn positions taken by another writer; rebasing", n=conflicts)
                    try:
                        await self._on_conflict()
                    except Exception:  # the store went away mid-rebase: back off, try again
                        log.warning("rebase failed; retrying", exc_info=True)
                        await asyncio.sleep(self._retry_max)
                    if conflicts > 3:  # a busy rival: let it finish its burst
                        await asyncio.sleep(min(self._retry_max, self._retry_initial * conflicts))
                    continue
                failures += 1
                delay = min(self._retry_max, self._retry_initial * 2 ** (failures - 1))
                log.warning(
                    "turn sync write failed; retrying",
                    attempt=failures,
                    retry_in=delay,
                    pending=self.pending,
                    exc_info=True,
                )
                await asyncio.sleep(delay)
            else:
                if failures:
                    log.info("turn sync recovered", attempts=failures + 1)
                return

    async def _push(self) -> None:
        if self._conversation is not None:
            await self._store.upsert_conversation(self._conversation)
            self._conversation = None
        # Deletes first: a turn that takes the position of one just deleted (a summary replacing
        # what it summarises) must not collide with it in the store.
        await self._write_deletes()
        await self._write_dirty()

    async def _write_dirty(self) -> None:
        # Detached copies: the conversation keeps mutating these turns while the write awaits.
        batch = [
            (turn, turn.snapshot().to_record())
            for turn in self._dirty.values()
            if self._written.get(turn.id) != turn.version
        ]
        if batch:
            transform = self._transform
            records = [transform(r) if transform else r for _, r in batch]
            await self._store.write_turns(records)
        for turn, record in batch:
            self._written[turn.id] = record["version"]
        for turn_id, turn in list(self._dirty.items()):
            if self._written.get(turn_id) == turn.version:
                del self._dirty[turn_id]

    async def _write_deletes(self) -> None:
        by_conversation: dict[str, list[str]] = defaultdict(list)
        for turn_id, conversation_id in self._deleted.items():
            by_conversation[conversation_id].append(turn_id)
        for conversation_id, turn_ids in by_conversation.items():
            await self._store.delete_turns(conversation_id, turn_ids)
            for turn_id in turn_ids:
                # The store holds no version now, even of a turn re-added while this delete was
                # in flight: forgetting it makes that turn count as unwritten, so it is rewritten.
                self._written.pop(turn_id, None)
                if self._deleted.get(turn_id) == conversation_id:
                    del self._deleted[turn_id]
