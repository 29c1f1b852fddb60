"""`Store` on SQLAlchemy async Core: SQLite (the embedded default) and PostgreSQL, one code path.

Core rather than the ORM because every operation here is a set-based upsert or delete on plain
rows: an identity map would only add copies and flush ordering to a write-behind hot path. The two
dialects differ only in which `insert` construct carries `ON CONFLICT`, so that choice is made in
one place (`_insert`). Every write transaction starts with a write statement, so SQLite takes its
write lock up front and the busy timeout applies instead of a lock-upgrade failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    case,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from voxline.store.base import (
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
from voxline.store.migrations import upgrade_to_head
from voxline.store.schema import (
    agents,
    api_keys,
    approvals,
    audit_log,
    conversations,
    listeners,
    once_keys,
    turns,
)

# What a user may write -> the async driver we run it with.
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_EXAMPLES = "sqlite+aiosqlite:///path/to/voxline.db or postgresql+asyncpg://user@host/dbname"

# Turn columns in the key order of `Turn.to_record()`, so loaded dicts match it exactly.
_TURN_COLUMNS = ("id", "conversation_id", "seq", "created_at", "version", "kind", "data")
_TURN_MUTABLE = ("kind", "seq", "version", "created_at", "data")

# Bound parameters per IN list: well under SQLite's and asyncpg's 32,767-parameter limits.
_IN_CHUNK = 1000

SQLITE_BUSY_TIMEOUT_MS = 5000

# Key of the PostgreSQL advisory lock that serialises migrations between workers ("voxline").
MIGRATION_LOCK_KEY = 0x766F786C696E65


class DatabaseURLError(ValueError):
    """The database URL cannot be served; the message says what would work, on one line."""


def parse_database_url(url: str) -> URL:
    """Normalise `url` to the async driver we support, or fail with a one-line reason."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The text is not echoed: a malformed URL may still carry a password.
        raise DatabaseURLError(f"cannot parse the database URL; use {_EXAMPLES}") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise DatabaseURLError(
            f"unsupported database URL scheme {parsed.drivername!r}; use {_EXAMPLES}"
        )
    return parsed.set(drivername=driver)


def _chunks(items: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _latest(
    existing: ColumnElement[Any], incoming: ColumnElement[Any] | float
) -> ColumnElement[Any]:
    """The later of two timestamps, portably (SQLite has no GREATEST, PostgreSQL no 2-arg MAX)."""
    return case((existing > incoming, existing), else_=incoming)


def _latest_per_key(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (conversation, turn), the highest version winning.

    PostgreSQL refuses an upsert batch that touches the same row twice, and the lower version
    would be discarded by the version guard anyway.
    """
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        key = (record["conversation_id"], record["id"])
        kept = best.get(key)
        if kept is None or record["version"] > kept["version"]:
            best[key] = {name: record[name] for name in _TURN_COLUMNS}
    return list(best.values())


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the single writer; the busy timeout makes writers queue.

    synchronous=NORMAL is the usual WAL pairing: commits survive a crash of the process, and only
    a power loss can take back the last few, which is an acceptable trade for a conversation log.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _migrate(connection: Connection) -> None:
    """Upgrade to head, one process at a time.

    Workers starting together would otherwise both find a table missing and both create it.
    PostgreSQL gets a transaction-scoped advisory lock; SQLite takes its write lock up front with
    BEGIN IMMEDIATE (waiting out the busy timeout), which also makes the upgrade atomic there.
    Whoever comes second finds the schema at head and does nothing.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    upgrade_to_head(connection)


class SqlStore:
    """A `PlatformStore` on any SQLAlchemy async URL we support (see `parse_database_url`)."""

    def __init__(self, url: str) -> None:
        self._url = parse_database_url(url)
        self._engine: AsyncEngine | None = None

    def __repr__(self) -> str:
        return f"SqlStore({self._url.render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        return self._url.get_backend_name()

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and bring the schema to the latest migration; idempotent."""
        if self._engine is not None:
            return
        if self.dialect == "sqlite":
            self._make_sqlite_directory()
        try:
            engine = create_async_engine(self._url)
        except ImportError as exc:
            raise DatabaseURLError(
                f"the {self._url.drivername} driver is not installed: pip install {exc.name}"
            ) from None
        if self.dialect == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_migrate)
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine

    def _make_sqlite_directory(self) -> None:
        database = self._url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    def _require_engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"{self!r} is not open; await store.open() first")
        return self._engine

    def _insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        return postgresql.insert(table)

    def _upsert_by_id(
        self, table: Table, values: dict[str, Any], *, keep: tuple[str, ...] = ()
    ) -> sqlite.Insert | postgresql.Insert:
        """Insert, or replace the row with the same id except for the columns in `keep`."""
        stmt = self._insert(table).values(**values)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={name: stmt.excluded[name] for name in values if name not in ("id", *keep)},
        )

    async def _fetch(self, query: Select[Any]) -> list[dict[str, Any]]:
        async with self._require_engine().connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(query)).all()]

    # -- conversations -----------------------------------------------------------------------
    async def upsert_conversation(self, record: ConversationRecord) -> None:
        """Insert or update; `created_at` keeps its first value and `updated_at` never goes back."""
        stmt = self._insert(conversations).values(**record.model_dump(mode="json"))
        stmt = stmt.on_conflict_do_update(
            index_elements=[conversations.c.id],
            set_={
                "agent": stmt.excluded.agent,
                "subject": stmt.excluded.subject,
                "channel": stmt.excluded.channel,
                "metadata": stmt.excluded["metadata"],
                "updated_at": _latest(conversations.c.updated_at, stmt.excluded.updated_at),
            },
        )
        async with self._require_engine().begin() as conn:
            await conn.execute(stmt)

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        query = select(conversations).where(conversations.c.id == conversation_id)
        async with self._require_engine().connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else ConversationRecord.model_validate(dict(row._mapping))

    async def list_conversations(
        self, *, subject: str | None = None, limit: int = 100
    ) -> list[ConversationRecord]:
        """Most recently active first."""
        query = select(conversations)
        if subject is not None:
            query = query.where(conversations.c.subject == subject)
        query = query.order_by(conversations.c.updated_at.desc(), conversations.c.id).limit(limit)
        async with self._require_engine().connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ConversationRecord.model_validate(dict(row._mapping)) for row in rows]

    async def delete_conversations_before(self, cutoff: float) -> int:
        """Retention: drop conversations idle since before `cutoff`, with their turns and approvals.

        The conversation rows go first (returning their ids), so a conversation that becomes
        active again mid-sweep is either wholly deleted or wholly kept.
        """
        async with self._require_engine().begin() as conn:
            result = await conn.execute(
                delete(conversations)
                .where(conversations.c.updated_at < cutoff)
                .returning(conversations.c.id)
            )
            ids = list(result.scalars())
            for chunk in _chunks(ids):
                await conn.execute(delete(turns).where(turns.c.conversation_id.in_(chunk)))
                await conn.execute(delete(approvals).where(approvals.c.conversation_id.in_(chunk)))
        return len(ids)

    async def _touch_conversation(self, conn: AsyncConnection, conversation_id: str) -> None:
        """Mark activity, creating a bare conversation row when turns arrive before any record."""
        now = time.time()
        stmt = self._insert(conversations).values(
            id=conversation_id,
            agent="",
            channel="text",
            created_at=now,
            updated_at=now,
            metadata={},
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[conversations.c.id],
                set_={"updated_at": _latest(conversations.c.updated_at, stmt.excluded.updated_at)},
            )
        )

    # -- turns -------------------------------------------------------------------------------
    async def write_turns(self, records: list[dict[str, Any]]) -> None:
        """Upsert a batch atomically; a stored row is replaced only by a strictly newer version.
        A position another turn holds violates the unique (conversation, seq) index: the whole
        batch is rolled back and `SeqConflictError` raised."""
        rows = _latest_per_key(records)
        if not rows:
            return
        stmt = self._insert(turns)
        upsert = stmt.on_conflict_do_update(
            index_elements=[turns.c.conversation_id, turns.c.id],
            set_={name: stmt.excluded[name] for name in _TURN_MUTABLE},
            where=turns.c.version < stmt.excluded.version,
        )
        conversation_ids = sorted({row["conversation_id"] for row in rows})
        try:
            async with self._require_engine().begin() as conn:
                for conversation_id in conversation_ids:
                    await self._touch_conversation(conn, conversation_id)
                await conn.execute(upsert, rows)
        except IntegrityError as exc:
            raise SeqConflictError(",".join(conversation_ids), str(exc.orig)[:200]) from exc

    async def delete_turns(self, conversation_id: str, turn_ids: list[str]) -> None:
        if not turn_ids:
            return
        async with self._require_engine().begin() as conn:
            for chunk in _chunks(turn_ids):
                await conn.execute(
                    delete(turns).where(
                        turns.c.conversation_id == conversation_id, turns.c.id.in_(chunk)
                    )
                )
            await conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id)
                .values(updated_at=_latest(conversations.c.updated_at, time.time()))
            )

    async def load_turns(self, conversation_id: str) -> list[dict[str, Any]]:
        """Records in `Turn.to_record()` shape, in conversation order."""
        query = (
            select(*(turns.c[name] for name in _TURN_COLUMNS))
            .where(turns.c.conversation_id == conversation_id)
            .order_by(turns.c.seq, turns.c.id)
        )
        async with self._require_engine().connect() as conn:
            rows = (await conn.execute(query)).all()
        return [dict(row._mapping) for row in rows]

    # -- approvals ---------------------------------------------------------------------------
    async def save_approval(self, record: ApprovalRecord) -> None:
        """Insert or replace: an approval has one writer at a time (requester, then decider)."""
        async with self._require_engine().begin() as conn:
            await conn.execute(self._upsert_by_id(approvals, record.model_dump(mode="json")))

    async def replace_approval(self, record: ApprovalRecord, *, expected: ApprovalRecord) -> bool:
        """Compare-and-set in one UPDATE: the database decides which concurrent transition wins."""
        values = record.model_dump(mode="json")
        values.pop("id")
        claimed = approvals.c.claimed_by
        query = (
            update(approvals)
            .where(
                approvals.c.id == record.id,
                approvals.c.status == ApprovalStatus(expected.status).value,
                approvals.c.applied == expected.applied,
                claimed.is_(None)
                if expected.claimed_by is None
                else claimed == expected.claimed_by,
            )
            .values(**values)
        )
        async with self._require_engine().begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        query = select(approvals).where(approvals.c.id == approval_id)
        async with self._require_engine().connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else ApprovalRecord.model_validate(dict(row._mapping))

    async def list_approvals(
        self, *, status: ApprovalStatus | None = None, conversation_id: str | None = None
    ) -> list[ApprovalRecord]:
        """Oldest first, so a reviewer's queue reads in arrival order."""
        query = select(approvals)
        if status is not None:
            query = query.where(approvals.c.status == ApprovalStatus(status).value)
        if conversation_id is not None:
            query = query.where(approvals.c.conversation_id == conversation_id)
        query = query.order_by(approvals.c.created_at, approvals.c.id)
        async with self._require_engine().connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ApprovalRecord.model_validate(dict(row._mapping)) for row in rows]

    # -- the audit log -----------------------------------------------------------------------
    async def append_audit(self, record: AuditRecord) -> None:
        """Insert; an id already there stays as it was (entries are written once)."""
        insert = self._insert(audit_log).values(**record.model_dump(mode="json"))
        async with self._require_engine().begin() as conn:
            await conn.execute(insert.on_conflict_do_nothing(index_elements=[audit_log.c.id]))

    async def list_audit(self, query: AuditQuery | None = None) -> list[AuditRecord]:
        """Newest first (then by id, so equal times keep one order)."""
        query = query or AuditQuery()
        select_ = select(audit_log)
        for column, value in (
            (audit_log.c.conversation_id, query.conversation_id),
            (audit_log.c.action, query.action.value if query.action else None),
            (audit_log.c.tool, query.tool),
            (audit_log.c.actor, query.actor),
        ):
            if value is not None:
                select_ = select_.where(column == value)
        if query.since is not None:
            select_ = select_.where(audit_log.c.at >= query.since)
        if query.until is not None:
            select_ = select_.where(audit_log.c.at < query.until)
        select_ = select_.order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
        rows = await self._fetch(select_.limit(query.limit))
        return [AuditRecord.model_validate(row) for row in rows]

    # -- agents ------------------------------------------------------------------------------
    async def save_agent(self, record: AgentRecord) -> None:
        """Insert or replace by id, keeping the first `created_at`; a taken name conflicts."""
        values = record.model_dump(mode="json")
        try:
            async with self._require_engine().begin() as conn:
                await conn.execute(self._upsert_by_id(agents, values, keep=("created_at",)))
        except IntegrityError:
            raise ConflictError("agent", "name", record.name) from None

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        rows = await self._fetch(select(agents).where(agents.c.id == agent_id))
        return AgentRecord.model_validate(rows[0]) if rows else None

    async def get_agent_by_name(self, name: str) -> AgentRecord | None:
        rows = await self._fetch(select(agents).where(agents.c.name == name))
        return AgentRecord.model_validate(rows[0]) if rows else None

    async def list_agents(self) -> list[AgentRecord]:
        """By name, the order an operator scans a list in."""
        rows = await self._fetch(select(agents).order_by(agents.c.name))
        return [AgentRecord.model_validate(row) for row in rows]

    async def delete_agent(self, agent_id: str) -> bool:
        """Delete the agent and its listeners together; False when there was no such agent."""
        async with self._require_engine().begin() as conn:
            result = await conn.execute(delete(agents).where(agents.c.id == agent_id))
            await conn.execute(delete(listeners).where(listeners.c.agent_id == agent_id))
        return result.rowcount > 0

    # -- listeners ---------------------------------------------------------------------------
    async def save_listener(self, record: ListenerRecord) -> None:
        """Insert or replace by id; the agent must exist and (kind, address) be free.

        The agent row is read with a share lock in the same transaction, so an agent deleted
        concurrently either waits for this listener (and deletes it too) or makes this fail:
        no listener outlives its agent.
        """
        values = record.model_dump(mode="json")
        agent = select(agents.c.id).where(agents.c.id == record.agent_id)
        try:
            async with self._require_engine().begin() as conn:
                await conn.execute(self._upsert_by_id(listeners, values, keep=("created_at",)))
                if (await conn.execute(agent.with_for_update(read=True))).first() is None:
                    raise NotFoundError("agent", record.agent_id)
        except IntegrityError:
            raise ConflictError(
                "listener", "address", f"{values['kind']}:{record.address}"
            ) from None

    async def get_listener(self, listener_id: str) -> ListenerRecord | None:
        rows = await self._fetch(select(listeners).where(listeners.c.id == listener_id))
        return ListenerRecord.model_validate(rows[0]) if rows else None

    async def list_listeners(self, *, agent_id: str | None = None) -> list[ListenerRecord]:
        """Oldest first."""
        query = select(listeners)
        if agent_id is not None:
            query = query.where(listeners.c.agent_id == agent_id)
        rows = await self._fetch(query.order_by(listeners.c.created_at, listeners.c.id))
        return [ListenerRecord.model_validate(row) for row in rows]

    async def delete_listener(self, listener_id: str) -> bool:
        async with self._require_engine().begin() as conn:
            result = await conn.execute(delete(listeners).where(listeners.c.id == listener_id))
        return result.rowcount > 0

    # -- API keys ----------------------------------------------------------------------------
    async def save_api_key(self, record: ApiKeyRecord) -> None:
        """Insert or replace by id (revoking is saving with `revoked=True`); hashes are unique."""
        values = record.model_dump(mode="json")
        try:
            async with self._require_engine().begin() as conn:
                await conn.execute(self._upsert_by_id(api_keys, values, keep=("created_at",)))
        except IntegrityError:
            raise ConflictError("API key", "key_hash", record.key_hash) from None

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked ones included, so the caller can say why it fails."""
        rows = await self._fetch(select(api_keys).where(api_keys.c.key_hash == key_hash))
        return ApiKeyRecord.model_validate(rows[0]) if rows else None

    async def use_once(self, key: str, ttl: float) -> bool:
        """An insert that does nothing when the key is there: the database arbitrates races."""
        now = time.time()
        insert = self._insert(once_keys).values(key=key, expires_at=now + ttl)
        async with self._require_engine().begin() as conn:
            await conn.execute(delete(once_keys).where(once_keys.c.expires_at < now))
            result = await conn.execute(
                insert.on_conflict_do_nothing(index_elements=[once_keys.c.key])
            )
        return bool(result.rowcount)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Oldest first."""
        rows = await self._fetch(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id))
        return [ApiKeyRecord.model_validate(row) for row in rows]
