"""`PlatformStore` on Redis, for workers that share state without a SQL server.

Every key lives under a configurable prefix (`voxline:`), so deployments and tests can share one
Redis. The layout, with `P` for the prefix:

    P conversation:{id}             hash, one field per record field
    P conversations                 sorted set: id by updated_at (listing newest first, retention)
    P subject:{subject}             set of conversation ids (listing by subject)
    P turns:{conversation}          hash: turn id -> the turn record as JSON
    P turn_versions:{conversation}  hash: turn id -> version (what the version guard compares)
    P turn_seqs:{conversation}      hash: seq -> turn id (positions are unique per conversation)
    P approval:{id}                 hash;  P approvals: sorted set of ids by created_at
    P conversation_approvals:{id}   set of approval ids (retention takes them along)
    P agent:{id}, P agents (set), P agent_names (hash: name -> id)
    P listener:{id}, P listeners (set), P listener_addresses (hash: "kind address" -> id),
    P agent_listeners:{agent id} (set)
    P api_key:{id}, P api_keys (set), P api_key_hashes (hash: key hash -> id)
    P once:{key}                    a key used once (a call's CallSid), expiring by itself
    P audit*                        the audit log (see `redis_audit.py`)

Record hashes hold each field JSON-encoded on its own: the Lua scripts compare and copy those
strings (`updated_at`) without decoding them, so every float round-trips exactly.

Turn batches, the hot path, run as Lua scripts: one atomic step applies the version guard and
touches the conversations. Other multi-key writes decide on what they read (a name taken, an
agent gone), so they are WATCH/MULTI transactions that redis-py retries when a watched key
changes underneath. Keys are built from ids inside scripts too, so this targets a single Redis
(or a replicated primary), not Redis Cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from voxline.store.base import (
    APPROVAL_STATE_FIELDS,
    AgentRecord,
    ApiKeyRecord,
    ApprovalRecord,
    ApprovalStatus,
    AuditQuery,
    AuditRecord,
    ConversationRecord,
    ListenerRecord,
)
from voxline.store.errors import ConflictError, NotFoundError, SeqConflictError
from voxline.store.redis_audit import RedisAuditLog
from voxline.store.redis_scripts import DELETE_TURNS, WRITE_TURNS

M = TypeVar("M", bound=BaseModel)
UniqueRecord = AgentRecord | ListenerRecord | ApiKeyRecord

DEFAULT_PREFIX = "voxline:"

# Conversations per retention transaction: bounds what one WATCH guards and one EXEC deletes.
_SWEEP_CHUNK = 100


def _encode(record: BaseModel) -> dict[str, str]:
    return {name: json.dumps(value) for name, value in record.model_dump(mode="json").items()}


def _decode(model: type[M], fields: dict[str, str]) -> M:
    return model.model_validate({name: json.loads(value) for name, value in fields.items()})


def _text(value: bytes | str) -> str:
    """What a key or member is; the client decodes responses, this only narrows the type."""
    return value if isinstance(value, str) else value.decode()


def _texts(values: Iterable[Any]) -> list[str]:
    return [_text(value) for value in values]


def _fields(stored: dict[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(name): _text(value) for name, value in stored.items()}


def _multi(pipe: Pipeline) -> None:
    """Switch a watching pipeline from reading to queueing its writes."""
    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def _listener_address(kind: str, address: str) -> str:
    return f"{kind} {address}"  # a kind has no spaces, so this is unambiguous


class RedisStore:
    """A `PlatformStore` on the Redis at `url` (redis:// or rediss://), keys under `prefix`."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._url = url
        self._prefix = prefix
        self._client: Redis | None = None
        self._audit = RedisAuditLog(self._redis, self._key)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r})"  # the URL may carry a password

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and check the server answers, so a wrong URL fails at start-up; idempotent."""
        if self._client is not None:
            return
        client = Redis.from_url(self._url, decode_responses=True)
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._write_turns = client.register_script(WRITE_TURNS)
        self._delete_turns = client.register_script(DELETE_TURNS)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _redis(self) -> Redis:
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open; await store.open() first")
        return self._client

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    # -- audit (redis_audit.py) ----------------------------------------------------------------
    async def append_audit(self, record: AuditRecord) -> None:
        await self._audit.append_audit(record)

    async def list_audit(self, query: AuditQuery | None = None) -> list[AuditRecord]:
        return await self._audit.list_audit(query)

    async def _transaction(self, body: Callable[[Pipeline], Awaitable[None]], *watch: str) -> None:
        """Run `body` (reads, then `pipe.multi()`, then writes) until no watched key changed."""
        await self._redis().transaction(body, *watch)

    async def _load(self, model: type[M], keys: Iterable[str]) -> list[M]:
        """The records at `keys` that exist, in one round trip."""
        pipe = self._redis().pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return [_decode(model, _fields(stored)) for stored in await pipe.execute() if stored]

    async def _load_one(self, model: type[M], key: str) -> M | None:
        stored = await self._redis().hgetall(key)
        return _decode(model, _fields(stored)) if stored else None

    async def _load_by_index(self, model: type[M], kind: str, index: str, value: str) -> M | None:
        record_id = await self._redis().hget(self._key(index), value)
        return (
            None
            if record_id is None
            else await self._load_one(model, self._key(kind, _text(record_id)))
        )

    async def _load_all(self, model: type[M], kind: str, members: str) -> list[M]:
        """Every record of `kind` whose id is in the set at key `members`."""
        ids = await self._redis().smembers(members)
        return await self._load(model, (self._key(kind, _text(record_id)) for record_id in ids))

    # -- conversations -----------------------------------------------------------------------
    async def upsert_conversation(self, record: ConversationRecord) -> None:
        """Insert or update; `created_at` keeps its first value and `updated_at` never goes back."""
        key = self._key("conversation", record.id)
        fields = _encode(record)

        async def body(pipe: Pipeline) -> None:
            stored = _fields(await pipe.hgetall(key))
            old_subject = None
            if stored:
                fields["created_at"] = stored["created_at"]
                if json.loads(stored["updated_at"]) > record.updated_at:
                    fields["updated_at"] = stored["updated_at"]
                old_subject = json.loads(stored["subject"])
            _multi(pipe)
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # str values are fine
            pipe.zadd(self._key("conversations"), {record.id: json.loads(fields["updated_at"])})
            if old_subject is not None and old_subject != record.subject:
                pipe.srem(self._key("subject", old_subject), record.id)
            if record.subject is not None:
                pipe.sadd(self._key("subject", record.subject), record.id)

        await self._transaction(body, key)

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        return await self._load_one(ConversationRecord, self._key("conversation", conversation_id))

    async def list_conversations(
        self, *, subject: str | None = None, limit: int = 100
    ) -> list[ConversationRecord]:
        """Most recently active first, ties by id (as in SQL)."""
        redis = self._redis()
        index = self._key("conversations")
        if limit <= 0:
            return []
        if subject is None:
            top = cast(
                list[tuple[str, float]],
                await redis.zrevrange(index, 0, limit - 1, withscores=True),
            )
            scored = dict(top)
            if len(top) == limit:
                # Members tied with the last one may sort before it by id: fetch them all.
                boundary = top[-1][1]
                for member in _texts(await redis.zrangebyscore(index, boundary, boundary)):
                    scored[member] = boundary
        else:
            ids = _texts(await redis.smembers(self._key("subject", subject)))
            scores = await redis.zmscore(index, ids) if ids else []
            scored = {
                id_: score for id_, score in zip(ids, scores, strict=True) if score is not None
            }
        ranked = sorted(scored, key=lambda id_: (-scored[id_], id_))[:limit]
        return await self._load(
            ConversationRecord, (self._key("conversation", id_) for id_ in ranked)
        )

    async def delete_conversations_before(self, cutoff: float) -> int:
        """Retention: drop conversations idle since before `cutoff`, with turns and approvals.

        Each chunk is one transaction watching the conversations it deletes, so one that turns
        active mid-sweep (a turn written, an approval saved) is re-examined and kept.
        """
        deleted = 0
        while True:
            candidates = await self._redis().zrangebyscore(
                self._key("conversations"), "-inf", f"({cutoff!r}", start=0, num=_SWEEP_CHUNK
            )
            if not candidates:
                return deleted
            deleted += await self._delete_conversations(_texts(candidates), cutoff)

    async def _delete_conversations(self, ids: list[str], cutoff: float) -> int:
        index = self._key("conversations")
        doomed: list[str] = []

        async def body(pipe: Pipeline) -> None:
            scores = await pipe.zmscore(index, ids)
            doomed[:] = [
                i for i, s in zip(ids, scores, strict=True) if s is not None and s < cutoff
            ]
            subjects = [await pipe.hget(self._key("conversation", i), "subject") for i in doomed]
            approvals = [
                await pipe.smembers(self._key("conversation_approvals", i)) for i in doomed
            ]
            _multi(pipe)
            for conversation_id, subject, approval_ids in zip(
                doomed, subjects, approvals, strict=True
            ):
                pipe.delete(
                    self._key("conversation", conversation_id),
                    self._key("turns", conversation_id),
                    self._key("turn_versions", conversation_id),
                    self._key("turn_seqs", conversation_id),
                    self._key("conversation_approvals", conversation_id),
                    *(self._key("approval", _text(a)) for a in approval_ids),
                )
                pipe.zrem(index, conversation_id)
                if approval_ids:
                    pipe.zrem(self._key("approvals"), *approval_ids)
                if subject is not None and json.loads(subject) is not None:
                    pipe.srem(self._key("subject", json.loads(subject)), conversation_id)

        watched = [
            self._key(kind, i) for i in ids for kind in ("conversation", "conversation_approvals")
        ]
        # Not the index: every touch rewrites the conversation hash too, which is watched.
        await self._transaction(body, *watched)
        return len(doomed)

    # -- turns -------------------------------------------------------------------------------
    async def write_turns(self, records: list[dict[str, Any]]) -> None:
        """Upsert a batch atomically; a stored turn is replaced only by a strictly newer version."""
        if not records:
            return
        now = time.time()
        conversation_ids = sorted({record["conversation_id"] for record in records})
        number = {conversation_id: n for n, conversation_id in enumerate(conversation_ids, 1)}
        keys = [self._key("conversations")]
        args: list[str | int] = [json.dumps(now)]
        for conversation_id in conversation_ids:
            keys += [
                self._key("conversation", conversation_id),
                self._key("turns", conversation_id),
                self._key("turn_versions", conversation_id),
                self._key("turn_seqs", conversation_id),
            ]
            bare = _encode(ConversationRecord(id=conversation_id, created_at=now, updated_at=now))
            args += [conversation_id, len(bare), *(x for pair in bare.items() for x in pair)]
        for record in records:
            args += [
                number[record["conversation_id"]],
                record["id"],
                record["version"],
                int(record["seq"]),
                json.dumps(record),
            ]
        client = self._redis()  # first, so a store never opened says so
        try:
            await self._write_turns(keys=keys, args=args, client=client)
        except ResponseError as exc:
            if "SEQCONFLICT" not in str(exc):
                raise
            raise SeqConflictError(",".join(conversation_ids), str(exc)) from exc

    async def delete_turns(self, conversation_id: str, turn_ids: list[str]) -> None:
        if not turn_ids:
            return
        keys = [
            self._key("conversations"),
            self._key("conversation", conversation_id),
            self._key("turns", conversation_id),
            self._key("turn_versions", conversation_id),
            self._key("turn_seqs", conversation_id),
        ]
        client = self._redis()
        args = [json.dumps(time.time()), conversation_id, *turn_ids]
        await self._delete_turns(keys=keys, args=args, client=client)

    async def load_turns(self, conversation_id: str) -> list[dict[str, Any]]:
        """Records in `Turn.to_record()` shape, in conversation order."""
        stored = await self._redis().hvals(self._key("turns", conversation_id))
        records = [json.loads(value) for value in stored]
        return sorted(records, key=lambda record: (record["seq"], record["id"]))

    # -- approvals ---------------------------------------------------------------------------
    async def save_approval(self, record: ApprovalRecord) -> None:
        """Insert or replace: an approval has one writer at a time (requester, then decider)."""
        key = self._key("approval", record.id)

        async def body(pipe: Pipeline) -> None:
            previous = await pipe.hget(key, "conversation_id")
            _multi(pipe)
            pipe.hset(key, mapping=_encode(record))  # type: ignore[arg-type]
            pipe.zadd(self._key("approvals"), {record.id: record.created_at})
            if previous is not None and json.loads(previous) != record.conversation_id:
                pipe.srem(self._key("conversation_approvals", json.loads(previous)), record.id)
            pipe.sadd(self._key("conversation_approvals", record.conversation_id), record.id)

        await self._transaction(body, key)

    async def replace_approval(self, record: ApprovalRecord, *, expected: ApprovalRecord) -> bool:
        """Compare-and-set under WATCH: a concurrent transition aborts ours and we re-read."""
        key = self._key("approval", record.id)
        won = False

        async def body(pipe: Pipeline) -> None:
            nonlocal won
            won = False
            stored = _fields(await pipe.hgetall(key))
            if not stored:
                return
            current = _decode(ApprovalRecord, stored)
            if any(
                getattr(current, name) != getattr(expected, name) for name in APPROVAL_STATE_FIELDS
            ):
                return
            _multi(pipe)
            pipe.hset(key, mapping=_encode(record))  # type: ignore[arg-type]
            won = True

        await self._transaction(body, key)
        return won

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        return await self._load_one(ApprovalRecord, self._key("approval", approval_id))

    async def list_approvals(
        self, *, status: ApprovalStatus | None = None, conversation_id: str | None = None
    ) -> list[ApprovalRecord]:
        """Oldest first, so a reviewer's queue reads in arrival order."""
        redis = self._redis()
        if conversation_id is None:
            ids = _texts(await redis.zrange(self._key("approvals"), 0, -1))
        else:
            ids = _texts(await redis.smembers(self._key("conversation_approvals", conversation_id)))
        found = await self._load(ApprovalRecord, (self._key("approval", i) for i in ids))
        if status is not None:
            found = [approval for approval in found if approval.status == ApprovalStatus(status)]
        return sorted(found, key=lambda approval: (approval.created_at, approval.id))

    # -- unique-indexed records (agents, listeners, API keys) --------------------------------
    async def _check_unique(
        self,
        pipe: Pipeline,
        record: UniqueRecord,
        kind: str,
        index: str,
        unique: Callable[[dict[str, str]], str],
        conflict: ConflictError,
    ) -> dict[str, str]:
        """Read phase of saving `record` whose `unique(fields)` must be free in hash `index`.

        Returns the stored fields (empty when new); queues nothing. The caller then calls
        `_write_unique` after `pipe.multi()` together with its own writes.
        """
        owner = await pipe.hget(self._key(index), unique(_encode(record)))
        if owner is not None and _text(owner) != record.id:
            raise conflict
        return _fields(await pipe.hgetall(self._key(kind, record.id)))

    def _write_unique(
        self,
        pipe: Pipeline,
        record: UniqueRecord,
        kind: str,
        index: str,
        unique: Callable[[dict[str, str]], str],
        stored: dict[str, str],
    ) -> None:
        """Write phase: the record (keeping its first `created_at`), its index entry and set."""
        fields = _encode(record)
        if stored:
            fields["created_at"] = stored["created_at"]
            if unique(stored) != unique(fields):
                pipe.hdel(self._key(index), unique(stored))
        pipe.hset(self._key(index), unique(fields), record.id)
        pipe.hset(self._key(kind, record.id), mapping=fields)  # type: ignore[arg-type]
        pipe.sadd(self._key(kind + "s"), record.id)

    async def _save_unique(
        self,
        record: UniqueRecord,
        kind: str,
        index: str,
        unique: Callable[[dict[str, str]], str],
        conflict: ConflictError,
    ) -> None:
        """Save a unique-indexed record that needs no other check or write (agents, API keys):
        `_check_unique` then `_write_unique` in one transaction watching the index and the
        record, so a concurrent save of the same unique value conflicts instead of both winning.
        """

        async def body(pipe: Pipeline) -> None:
            stored = await self._check_unique(pipe, record, kind, index, unique, conflict)
            _multi(pipe)
            self._write_unique(pipe, record, kind, index, unique, stored)

        await self._transaction(body, self._key(index), self._key(kind, record.id))

    # -- agents ------------------------------------------------------------------------------
    async def save_agent(self, record: AgentRecord) -> None:
        """Insert or replace by id, keeping the first `created_at`; a taken name conflicts."""
        conflict = ConflictError("agent", "name", record.name)
        await self._save_unique(record, "agent", "agent_names", _agent_name, conflict)

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        return await self._load_one(AgentRecord, self._key("agent", agent_id))

    async def get_agent_by_name(self, name: str) -> AgentRecord | None:
        return await self._load_by_index(AgentRecord, "agent", "agent_names", name)

    async def list_agents(self) -> list[AgentRecord]:
        """By name, the order an operator scans a list in."""
        agents = await self._load_all(AgentRecord, "agent", self._key("agents"))
        return sorted(agents, key=lambda agent: agent.name)

    async def delete_agent(self, agent_id: str) -> bool:
        """Delete the agent and its listeners together; False when there was no such agent."""
        key = self._key("agent", agent_id)
        owned = self._key("agent_listeners", agent_id)
        existed = False

        async def body(pipe: Pipeline) -> None:
            nonlocal existed
            stored = _fields(await pipe.hgetall(key))
            listener_ids = [_text(i) for i in await pipe.smembers(owned)]
            listeners = [
                _fields(await pipe.hgetall(self._key("listener", i))) for i in listener_ids
            ]
            existed = bool(stored)
            _multi(pipe)
            if stored:
                pipe.hdel(self._key("agent_names"), _agent_name(stored))
                pipe.srem(self._key("agents"), agent_id)
            for listener_id, fields in zip(listener_ids, listeners, strict=True):
                if fields:
                    pipe.hdel(self._key("listener_addresses"), _listener_unique(fields))
                pipe.srem(self._key("listeners"), listener_id)
            pipe.delete(key, owned, *(self._key("listener", i) for i in listener_ids))

        await self._transaction(body, key, owned)
        return existed

    # -- listeners ---------------------------------------------------------------------------
    async def save_listener(self, record: ListenerRecord) -> None:
        """Insert or replace by id; the agent must exist and (kind, address) be free.

        The transaction watches the agent, and `delete_agent` watches the agent's listener set,
        so whichever commits second re-reads: no listener outlives its agent.
        """
        agent_key = self._key("agent", record.agent_id)
        conflict = ConflictError("listener", "address", f"{record.kind.value}:{record.address}")

        async def body(pipe: Pipeline) -> None:
            stored = await self._check_unique(
                pipe, record, "listener", "listener_addresses", _listener_unique, conflict
            )
            if not await pipe.exists(agent_key):
                raise NotFoundError("agent", record.agent_id)
            _multi(pipe)
            self._write_unique(
                pipe, record, "listener", "listener_addresses", _listener_unique, stored
            )
            if stored and json.loads(stored["agent_id"]) != record.agent_id:
                pipe.srem(self._key("agent_listeners", json.loads(stored["agent_id"])), record.id)
            pipe.sadd(self._key("agent_listeners", record.agent_id), record.id)

        await self._transaction(
            body, self._key("listener_addresses"), self._key("listener", record.id), agent_key
        )

    async def get_listener(self, listener_id: str) -> ListenerRecord | None:
        return await self._load_one(ListenerRecord, self._key("listener", listener_id))

    async def list_listeners(self, *, agent_id: str | None = None) -> list[ListenerRecord]:
        """Oldest first."""
        members = (
            self._key("listeners") if agent_id is None else self._key("agent_listeners", agent_id)
        )
        found = await self._load_all(ListenerRecord, "listener", members)
        return sorted(found, key=lambda listener: (listener.created_at, listener.id))

    async def delete_listener(self, listener_id: str) -> bool:
        key = self._key("listener", listener_id)
        existed = False

        async def body(pipe: Pipeline) -> None:
            nonlocal existed
            stored = _fields(await pipe.hgetall(key))
            existed = bool(stored)
            _multi(pipe)
            if stored:
                pipe.hdel(self._key("listener_addresses"), _listener_unique(stored))
                pipe.srem(self._key("agent_listeners", json.loads(stored["agent_id"])), listener_id)
                pipe.srem(self._key("listeners"), listener_id)
                pipe.delete(key)

        await self._transaction(body, key)
        return existed

    # -- API keys ----------------------------------------------------------------------------
    async def save_api_key(self, record: ApiKeyRecord) -> None:
        """Insert or replace by id (revoking is saving with `revoked=True`); hashes are unique."""
        conflict = ConflictError("API key", "key_hash", record.key_hash)
        await self._save_unique(record, "api_key", "api_key_hashes", _key_hash, conflict)

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked ones included, so the caller can say why it fails."""
        return await self._load_by_index(ApiKeyRecord, "api_key", "api_key_hashes", key_hash)

    async def use_once(self, key: str, ttl: float) -> bool:
        """`SET NX PX`: Redis arbitrates races and forgets the key when it expires."""
        stored = await self._redis().set(
            self._key("once", key), "1", nx=True, px=max(1, int(ttl * 1000))
        )
        return bool(stored)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Oldest first."""
        keys = await self._load_all(ApiKeyRecord, "api_key", self._key("api_keys"))
        return sorted(keys, key=lambda key: (key.created_at, key.id))


# What each kind of record must hold uniquely, read from its encoded fields.
def _agent_name(fields: dict[str, str]) -> str:
    return str(json.loads(fields["name"]))


def _listener_unique(fields: dict[str, str]) -> str:
    return _listener_address(json.loads(fields["kind"]), json.loads(fields["address"]))


def _key_hash(fields: dict[str, str]) -> str:
    return str(json.loads(fields["key_hash"]))
