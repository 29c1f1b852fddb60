"""The storage contract every backend implements.

Stores know only records (plain pydantic models and turn dicts), never sessions or channels.
Turn writes are upserts guarded by version: a write carrying an older version than the stored
one is ignored, so out-of-order flushes from a write-behind subscriber can never regress state.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field


def _now() -> float:
    return time.time()


class ConversationRecord(BaseModel):
    id: str
    agent: str = ""
    subject: str | None = None  # the caller's canonical identity, e.g. "phone:+14155550100"
    channel: str = "text"
    created_at: float = Field(default_factory=_now)
    updated_at: float = Field(default_factory=_now)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class ApprovalRecord(BaseModel):
    """A tool call waiting for (or decided by) a human."""

    id: str
    conversation_id: str
    call_id: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    subject: str | None = None
    status: ApprovalStatus = ApprovalStatus.PENDING
    reason: str | None = None
    result: str | None = None  # what the tool returned once approved and run
    applied: bool = False  # the outcome has been fed back into the conversation
    created_at: float = Field(default_factory=_now)
    decided_at: float | None = None
    # The live connection (call, SMS exchange, text session) whose turn asked: the outcome is
    # delivered there while it lasts.
    connection_id: str | None = None
    # Who is applying a decision (running the tool): set once, by compare-and-set, so any
    # number of workers reaching the same decision run the tool at most once.
    claimed_by: str | None = None


# The fields a compare-and-set on an approval compares: the state machine's position.
APPROVAL_STATE_FIELDS = ("status", "applied", "claimed_by")


class AuditAction(StrEnum):
    TOOL_RUN = "tool_run"  # an agent ran a tool (or was refused, or it waits for a human)
    APPROVAL_DECIDED = "approval_decided"  # a human approved or rejected a tool call


class AuditRecord(BaseModel):
    """One entry of the audit log: who did what, when, in which conversation. Written once and
    never changed; kept when its conversation is deleted by retention, because the log is
    what answers "who refunded this order" after the transcript is gone."""

    id: str
    at: float = Field(default_factory=_now)
    action: AuditAction
    actor: str  # "agent:NAME" for a tool the agent ran; "key:ID" (or a name) for a decision
    conversation_id: str | None = None
    connection_id: str | None = None
    subject: str | None = None
    agent: str | None = None
    tool: str | None = None
    outcome: str | None = None  # ok, error, not_run, pending_approval; approved, rejected
    details: dict[str, Any] = Field(default_factory=dict)


class AuditQuery(BaseModel):
    """Filters of `Store.list_audit`; every one is optional. Newest first; `until` is
    exclusive, so the oldest `at` of a page is the `until` of the next."""

    conversation_id: str | None = None
    action: AuditAction | None = None
    tool: str | None = None
    actor: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = Field(100, ge=1, le=1000)


@runtime_checkable
class Store(Protocol):
    """Async storage for conversations, their turns and approvals."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # conversations
    async def upsert_conversation(self, record: ConversationRecord) -> None: ...

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None: ...

    async def list_conversations(
        self, *, subject: str | None = None, limit: int = 100
    ) -> list[ConversationRecord]: ...

    async def delete_conversations_before(self, cutoff: float) -> int: ...

    # turns (dicts from `Turn.to_record()`)
    async def write_turns(self, records: list[dict[str, Any]]) -> None:
        """Upsert atomically, newer versions only. A record whose `seq` another turn of its
        conversation holds raises `SeqConflictError` and nothing of the batch is kept."""
        ...

    async def delete_turns(self, conversation_id: str, turn_ids: list[str]) -> None: ...

    async def load_turns(self, conversation_id: str) -> list[dict[str, Any]]: ...

    # approvals
    async def save_approval(self, record: ApprovalRecord) -> None: ...

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None: ...

    async def list_approvals(
        self, *, status: ApprovalStatus | None = None, conversation_id: str | None = None
    ) -> list[ApprovalRecord]: ...

    async def replace_approval(self, record: ApprovalRecord, *, expected: ApprovalRecord) -> bool:
        """Compare-and-set: store `record` only if the stored approval's state
        (`APPROVAL_STATE_FIELDS`) still equals `expected`'s. Returns whether it was stored; the
        one transition that wins is the one that acts (decides, runs the tool)."""
        ...

    # the audit log
    async def append_audit(self, record: AuditRecord) -> None:
        """Add an entry; an id already there is left as it was (entries never change)."""
        ...

    async def list_audit(self, query: AuditQuery | None = None) -> list[AuditRecord]:
        """Entries matching `query`, newest first, at most `query.limit`."""
        ...


# -- platform records (the REST API of issue 6): agents, listeners, API keys ------------------


class AgentRecord(BaseModel):
    """An agent defined over the API. `spec` is an `AgentSpec` as JSON; `version` counts updates
    so a worker can tell a cached agent is stale."""

    id: str
    name: str
    spec: dict[str, Any]
    version: int = 1
    created_at: float = Field(default_factory=_now)
    updated_at: float = Field(default_factory=_now)


class ListenerKind(StrEnum):
    PHONE = "phone"  # an E.164 number, or a wildcard pattern such as "+1415*" or "*"
    WEBSOCKET = "websocket"  # a WebSocket path such as "/ws/support"


class ListenerRecord(BaseModel):
    """An agent deployed on an address; reclaimed when its feed client stays away too long."""

    id: str
    agent_id: str
    kind: ListenerKind
    address: str
    idle_timeout: float = 300.0
    created_at: float = Field(default_factory=_now)
    last_seen_at: float = Field(default_factory=_now)


class ApiKeyRecord(BaseModel):
    """A bearer key, stored only as a hash; `prefix` (the first characters) names it in lists."""

    id: str
    name: str
    key_hash: str
    prefix: str
    created_at: float = Field(default_factory=_now)
    revoked: bool = False
    # What the key may do beyond the REST API (every key has that): "approvals" lets it list
    # and decide approvals at /approvals. Records written before scopes existed have none.
    scopes: list[str] = Field(default_factory=list)


@runtime_checkable
class PlatformStore(Store, Protocol):
    """A `Store` that also keeps the platform's records; every backend implements it."""

    async def save_agent(self, record: AgentRecord) -> None: ...

    async def get_agent(self, agent_id: str) -> AgentRecord | None: ...

    async def get_agent_by_name(self, name: str) -> AgentRecord | None: ...

    async def list_agents(self) -> list[AgentRecord]: ...

    async def delete_agent(self, agent_id: str) -> bool: ...

    async def save_listener(self, record: ListenerRecord) -> None: ...

    async def get_listener(self, listener_id: str) -> ListenerRecord | None: ...

    async def list_listeners(self, *, agent_id: str | None = None) -> list[ListenerRecord]: ...

    async def delete_listener(self, listener_id: str) -> bool: ...

    async def save_api_key(self, record: ApiKeyRecord) -> None: ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    async def use_once(self, key: str, ttl: float) -> bool:
        """True the first time `key` is used within `ttl` seconds, on any worker; False after.
        Atomic in the store, so two workers racing on one key cannot both win."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRecord]: ...


class Subscription(Protocol):
    """One subscriber's stream of events; `dropped` counts events lost to a full queue."""

    dropped: int

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    async def __anext__(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EventBroker(Protocol):
    """Fan-out of JSON events between workers (debug feeds): in-process, or Redis pub/sub."""

    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, channel: str) -> Subscription: ...

    async def close(self) -> None: ...
