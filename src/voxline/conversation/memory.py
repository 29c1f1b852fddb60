"""A conversation's memory, shared by its live sessions, and each session's view of it.

Memory is per caller and agent and outlives every connection; a live session is one call, one
SMS exchange, one text session. On one worker, all live sessions of a conversation share one
`ConversationMemory`: one `TurnStore` (so positions are handed out in one place) and one
write-behind `TurnSync`. Each session writes through a `SessionTurns` view that stamps its turns
with its channel and connection, and reads the shared history by one rule:

    its own turns as they happen; another connection's turns up to that connection's last
    finished reply (an exchange still in progress elsewhere is not shown, so a model never
    answers a question that was asked on another call).

An exchange whose connection is gone for good (its worker was killed mid-reply) would never
finish, so a worker that loads the history and finds no worker holding that connection settles
it as interrupted (`settle_abandoned`, asked by `LiveSessions`): the question it carried is seen.

Across workers, the store's unique (conversation, seq) constraint arbitrates: a sync whose write
finds its position taken gets `SeqConflictError`, and `rebase` adopts what the other worker
wrote and renumbers this worker's unwritten turns after it. Nothing of either is lost, no
position is used twice, and the common case (one writer) costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from voxline.conversation.sync import TurnSync
from voxline.conversation.turns import (
    BotTurn,
    SystemTurn,
    Turn,
    TurnStore,
    turn_from_record,
)
from voxline.events import EventBus
from voxline.store.base import ConversationRecord, Store

log = structlog.get_logger("voxline.memory")


class ConversationMemory:
    """The turns of one conversation on this worker, kept in step with the store."""

    def __init__(self, conversation_id: str) -> None:
        self.id = conversation_id
        self.bus = EventBus()  # turn_* and summary events of every session on this memory
        self.turns = TurnStore(conversation_id, self.bus)
        self._store: Store | None = None
        self._sync: TurnSync | None = None
        self.resumed = False  # it held turns from earlier contacts when opened

    @property
    def opened(self) -> bool:
        return self._sync is not None

    @property
    def sync(self) -> TurnSync | None:
        return self._sync

    async def open(
        self,
        store: Store,
        record: ConversationRecord,
        *,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """Load the stored history, make sure the conversation row exists, start syncing.
        `transform`: what is stored instead of each turn record (see `TurnSync`)."""
        self._store = store
        records = await store.load_turns(self.id)
        self.turns.restore([turn_from_record(r) for r in records])
        self.resumed = bool(records)
        existing = await store.get_conversation(self.id)
        await store.upsert_conversation(existing or record)
        self._sync = TurnSync(store, self.bus, on_conflict=self.rebase, transform=transform)
        self._sync.start()

    async def flush(self) -> None:
        if self._sync is not None:
            await self._sync.flush()

    async def close(self) -> None:
        """Write every turn through and stop syncing (wrap in a timeout: a dead store waits)."""
        if self._sync is not None:
            await self._sync.close()

    async def rebase(self) -> None:
        """Another writer took positions we meant to use: adopt its turns, move ours after."""
        if self._store is None:
            return
        stored = await self._store.load_turns(self.id)
        pending_deletes = self._sync.pending_deletes if self._sync is not None else set()
        moved = self.turns.rebase(
            [turn_from_record(r) for r in stored if r["id"] not in pending_deletes]
        )
        log.info(
            "conversation rebased on another writer's turns", conversation=self.id, moved=moved
        )

    def unsettled_connections(self) -> set[str]:
        """Connections with turns after their last finished reply. In a memory just loaded,
        each is an exchange in progress on another worker, or one whose worker died mid-way."""
        last: dict[str, int] = {}
        settled: dict[str, int] = {}
        for turn in self.turns.all():
            if turn.connection:
                last[turn.connection] = turn.seq
                if isinstance(turn, BotTurn) and (turn.complete or turn.interrupted):
                    settled[turn.connection] = turn.seq
        return {c for c, seq in last.items() if seq > settled.get(c, -1)}

    def unsettled(self, connection: str) -> bool:
        """Whether `connection` has turns after its last finished reply."""
        last = settled = -1
        for turn in self.turns.all():
            if turn.connection == connection:
                last = turn.seq
                if isinstance(turn, BotTurn) and (turn.complete or turn.interrupted):
                    settled = turn.seq
        return last > settled

    def settle_abandoned(self, connection: str, *, lost: bool = True) -> None:
        """`connection` is gone for good in mid-exchange (its worker was killed): end its
        exchange as interrupted (its unfinished reply, else an empty interrupted reply after
        its last turn), in the store too. Otherwise what was said on it, the unanswered
        question included, would stay hidden from every session as "in progress" forever."""
        own = [turn for turn in self.turns.all() if turn.connection == connection]
        if not own:
            return
        last = own[-1]
        if isinstance(last, BotTurn) and not (last.complete or last.interrupted):
            last.interrupted = True
        else:
            self.turns.add(BotTurn(interrupted=True, channel=last.channel, connection=connection))
        report = log.warning if lost else log.info
        report(
            "an unfinished exchange was settled",
            why="connection lost" if lost else "connection closed",
            conversation=self.id,
            connection=connection,
        )


class SessionTurns(TurnStore):
    """One live session's view of a shared `TurnStore`: adds are stamped with the session's
    channel and connection; `all()` hides other connections' exchanges still in progress."""

    def __init__(self, base: TurnStore, *, channel: str, connection: str) -> None:
        # Not super().__init__: this view owns no turns, it shares `base`'s.
        self.conversation_id = base.conversation_id
        self.bus = base.bus
        self.base = base
        self._turns = base._turns
        self.channel = channel
        self.connection = connection

    def add(self, turn: Turn, *, seq: int | None = None) -> Turn:
        if not turn.channel:
            turn.channel = self.channel
        if not turn.connection:
            turn.connection = self.connection
        return self.base.add(turn, seq=seq)

    def restore(self, turns: list[Turn]) -> None:
        self.base.restore(turns)

    def delete(self, turn_id: str) -> Turn:
        return self.base.delete(turn_id)

    def rebase(self, stored: list[Turn]) -> int:
        return self.base.rebase(stored)

    def own(self, turn: Turn) -> bool:
        return turn.connection == self.connection

    def all(self) -> list[Turn]:
        turns = self.base.all()
        settled = _settled_positions(turns, self.connection)
        return [t for t in turns if _visible(t, self.connection, settled)]


def _settled_positions(turns: list[Turn], mine: str) -> dict[str, int]:
    """For each other connection, the position of its last finished reply."""
    settled: dict[str, int] = {}
    for turn in turns:
        foreign = turn.connection and turn.connection != mine
        if foreign and isinstance(turn, BotTurn) and (turn.complete or turn.interrupted):
            settled[turn.connection] = turn.seq
    return settled


def _visible(turn: Turn, mine: str, settled: dict[str, int]) -> bool:
    if not turn.connection or turn.connection == mine:
        return True
    if isinstance(turn, SystemTurn) and turn.summary:
        return True  # a summary stands for everyone's earlier turns
    return turn.seq <= settled.get(turn.connection, -1)
