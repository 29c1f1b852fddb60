"""Versioned turn records and the per-session in-memory `TurnStore`.

Conversation state lives in memory because voice is latency-bound: a streaming reply mutates its
bot turn dozens of times a second. Every mutation of a public field bumps that record's
`version` and emits `turn_updated`, so a write-behind subscriber can push records to durable
storage at its own pace and know it is done only when the stored version equals this one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar

from voxline.events import EventBus


class TurnKind(StrEnum):
    USER_TEXT = "user_text"
    BOT_TEXT = "bot_text"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    SYSTEM = "system"
    DTMF = "dtmf"
    HANDOFF = "handoff"


_COMMON = ("id", "conversation_id", "seq", "created_at", "version")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass(eq=False)
class Turn:
    """One record in a conversation. Subclasses add the fields of their kind."""

    kind: ClassVar[TurnKind]
    id: str = field(default_factory=lambda: new_id("turn"))
    conversation_id: str = ""
    seq: int = 0
    created_at: float = field(default_factory=time.time)
    version: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    # Where the turn happened: the channel ("voice", "sms", "text", "web") and the live
    # connection (one call, one SMS exchange, one text session) that wrote it. Many live
    # sessions share a conversation's memory; these say whose turn each one is.
    channel: str = ""
    connection: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_store", None)

    def __setattr__(self, name: str, value: Any) -> None:
        store: TurnStore | None = self.__dict__.get("_store")
        object.__setattr__(self, name, value)
        if store is not None and name != "version" and not name.startswith("_"):
            object.__setattr__(self, "version", self.version + 1)
            store._changed(self)

    def touch(self) -> None:
        """Record an in-place change (e.g. to `metadata`) that plain assignment did not see."""
        self.metadata = self.metadata

    def to_record(self) -> dict[str, Any]:
        """A flat JSON-ready dict: the common columns plus `data` with the kind's own fields."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        record = {name: values.pop(name) for name in _COMMON}
        record["kind"] = self.kind.value
        record["data"] = values
        return record

    def snapshot(self) -> Turn:
        """A detached copy, safe to hand to another task while this one keeps mutating."""
        return type(self)(**asdict(self))


@dataclass(eq=False)
class UserTurn(Turn):
    kind: ClassVar[TurnKind] = TurnKind.USER_TEXT
    content: str = ""
    channel: str = "text"
    final: bool = True


@dataclass(eq=False)
class BotTurn(Turn):
    kind: ClassVar[TurnKind] = TurnKind.BOT_TEXT
    content: str = ""
    complete: bool = False
    interrupted: bool = False


@dataclass(eq=False)
class ToolCallTurn(Turn):
    kind: ClassVar[TurnKind] = TurnKind.TOOL_CALL
    call_id: str = ""
    name: str = ""
    arguments: str = "{}"
    approval_id: str | None = None


@dataclass(eq=False)
class ToolResultTurn(Turn):
    kind: ClassVar[TurnKind] = TurnKind.TOOL_RESULT
    call_id: str = ""
    name: str = ""
    content: str = ""
    is_error: bool = False


@dataclass(eq=False)
class SystemTurn(Turn):
    kind: ClassVar[TurnKind] = TurnKind.SYSTEM
    content: str = ""
    summary: bool = False


@dataclass(eq=False)
class DtmfTurn(Turn):
    kind: ClassVar[TurnKind] = TurnKind.DTMF
    digits: str = ""


@dataclass(eq=False)
class HandoffTurn(Turn):
    kind: ClassVar[TurnKind] = TurnKind.HANDOFF
    target: str = ""
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)


TURN_TYPES: dict[TurnKind, type[Turn]] = {
    cls.kind: cls
    for cls in (UserTurn, BotTurn, ToolCallTurn, ToolResultTurn, SystemTurn, DtmfTurn, HandoffTurn)
}


def turn_from_record(record: dict[str, Any]) -> Turn:
    """Rebuild a turn from `Turn.to_record()` output, ignoring fields this version does not know."""
    cls = TURN_TYPES[TurnKind(record["kind"])]
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in record.get("data", {}).items() if k in known}
    values.update({k: record[k] for k in _COMMON if k in record})
    return cls(**values)


class TurnStore:
    """The ordered turns of one conversation, with change events on a bus."""

    def __init__(self, conversation_id: str, bus: EventBus | None = None) -> None:
        self.conversation_id = conversation_id
        self.bus = bus or EventBus()
        self._turns: dict[str, Turn] = {}
        self._next_seq = 0

    # -- reading -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Turn]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self._turns)

    def __contains__(self, turn_id: object) -> bool:
        return turn_id in self._turns

    def get(self, turn_id: str) -> Turn | None:
        return self._turns.get(turn_id)

    def all(self) -> list[Turn]:
        return sorted(self._turns.values(), key=lambda t: t.seq)

    # -- writing -------------------------------------------------------------------------
    def add(self, turn: Turn, *, seq: int | None = None) -> Turn:
        """Adopt `turn` at the end (or at `seq`, which must be free) and emit `turn_added`."""
        object.__setattr__(turn, "conversation_id", self.conversation_id)
        if seq is None:
            seq = self._next_seq
        elif any(t.seq == seq for t in self._turns.values()):
            raise ValueError(f"seq {seq} is taken in conversation {self.conversation_id}")
        object.__setattr__(turn, "seq", seq)
        self._next_seq = max(self._next_seq, seq + 1)
        self._turns[turn.id] = turn
        object.__setattr__(turn, "_store", self)
        self.bus.emit("turn_added", turn=turn)
        return turn

    def restore(self, turns: list[Turn]) -> None:
        """Load persisted turns without emitting events: they are already stored."""
        for turn in turns:
            object.__setattr__(turn, "conversation_id", self.conversation_id)
            self._turns[turn.id] = turn
            self._next_seq = max(self._next_seq, turn.seq + 1)
            object.__setattr__(turn, "_store", self)

    def rebase(self, stored: list[Turn]) -> int:
        """Adopt `stored` (the store's turns, some written by another worker) and renumber the
        turns the store does not hold yet to follow them, in their order. Returns how many
        moved. Positions of written turns never change; no events fire (nothing a reader
        shows changed but the order)."""
        known = {turn.id for turn in stored}
        for turn in stored:
            if turn.id not in self._turns:
                object.__setattr__(turn, "conversation_id", self.conversation_id)
                object.__setattr__(turn, "_store", self)
                self._turns[turn.id] = turn
        unwritten = sorted(
            (t for t in self._turns.values() if t.id not in known), key=lambda t: t.seq
        )
        after = max((turn.seq for turn in stored), default=-1) + 1
        for offset, turn in enumerate(unwritten):
            object.__setattr__(turn, "seq", after + offset)
        self._next_seq = after + len(unwritten)
        return len(unwritten)

    def delete(self, turn_id: str) -> Turn:
        turn = self._turns.pop(turn_id)
        object.__setattr__(turn, "_store", None)
        self.bus.emit("turn_deleted", turn=turn)
        return turn

    def _changed(self, turn: Turn) -> None:
        self.bus.emit("turn_updated", turn=turn)

    # -- conveniences ----------------------------------------------------------------------
    def add_user_text(self, content: str, *, channel: str = "text", final: bool = True) -> UserTurn:
        turn = UserTurn(content=content, channel=channel, final=final)
        self.add(turn)
        return turn

    def add_bot_text(self, content: str = "") -> BotTurn:
        turn = BotTurn(content=content)
        self.add(turn)
        return turn

    def add_tool_call(
        self, call_id: str, name: str, arguments: str, *, approval_id: str | None = None
    ) -> ToolCallTurn:
        turn = ToolCallTurn(
            call_id=call_id, name=name, arguments=arguments, approval_id=approval_id
        )
        self.add(turn)
        return turn

    def add_tool_result(
        self, call_id: str, name: str, content: str, *, is_error: bool = False
    ) -> ToolResultTurn:
        turn = ToolResultTurn(call_id=call_id, name=name, content=content, is_error=is_error)
        self.add(turn)
        return turn

    def add_system(
        self, content: str, *, summary: bool = False, seq: int | None = None
    ) -> SystemTurn:
        turn = SystemTurn(content=content, summary=summary)
        self.add(turn, seq=seq)
        return turn

    def add_dtmf(self, digits: str) -> DtmfTurn:
        turn = DtmfTurn(digits=digits)
        self.add(turn)
        return turn

    def add_handoff(
        self, target: str, reason: str = "", data: dict[str, Any] | None = None
    ) -> HandoffTurn:
        turn = HandoffTurn(target=target, reason=reason, data=dict(data or {}))
        self.add(turn)
        return turn
