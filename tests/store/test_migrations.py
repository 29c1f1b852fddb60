"""Migrations: `SqlStore.open()` brings any database (fresh, create_all-era, current) to head."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from tests.store.conftest import scratch_postgres_url
from voxline.conversation.turns import TurnStore
from voxline.store.base import AgentRecord, ConversationRecord
from voxline.store.migrations import VERSION_TABLE, alembic_config
from voxline.store.schema import metadata
from voxline.store.sql import SqlStore, parse_database_url

T = TypeVar("T")

HEAD = "0003"  # the newest revision in voxline/store/migrations/versions

# What `metadata.create_all` made before migrations existed, frozen: only the first three tables.
CREATE_ALL_ERA_SQLITE = """
CREATE TABLE conversations (
    id VARCHAR(255) NOT NULL, agent TEXT NOT NULL, subject TEXT, channel TEXT NOT NULL,
    created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL, metadata JSON NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_conversations_subject ON conversations (subject);
CREATE INDEX ix_conversations_updated_at ON conversations (updated_at);
CREATE TABLE turns (
    conversation_id VARCHAR(255) NOT NULL, id VARCHAR(255) NOT NULL, kind VARCHAR(32) NOT NULL,
    seq INTEGER NOT NULL, version INTEGER NOT NULL, created_at DOUBLE NOT NULL,
    data JSON NOT NULL, PRIMARY KEY (conversation_id, id)
);
CREATE INDEX ix_turns_conversation_seq ON turns (conversation_id, seq);
CREATE TABLE approvals (
    id VARCHAR(255) NOT NULL, conversation_id VARCHAR(255) NOT NULL, call_id TEXT NOT NULL,
    tool TEXT NOT NULL, arguments JSON NOT NULL, subject TEXT, status VARCHAR(16) NOT NULL,
    reason TEXT, result TEXT, applied BOOLEAN NOT NULL, created_at DOUBLE NOT NULL,
    decided_at DOUBLE, PRIMARY KEY (id)
);
CREATE INDEX ix_approvals_conversation_id ON approvals (conversation_id);
CREATE INDEX ix_approvals_status ON approvals (status);
"""


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database that no store has opened yet."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'voxline.db'}"
    else:
        async with scratch_postgres_url() as url:
            yield url


async def _on_connection(url: str, work: Callable[[Connection], T]) -> T:
    engine = create_async_engine(parse_database_url(url))
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def _head() -> str | None:
    config = alembic_config(connection=None)  # type: ignore[arg-type]  # only reads scripts
    return ScriptDirectory.from_config(config).get_current_head()


def _revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _drift(connection: Connection) -> list[Any]:
    """What autogenerate would still change to make the database match `schema.metadata`."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _open_and_close(url: str) -> None:
    store = SqlStore(url)
    await store.open()
    await store.close()


async def test_a_fresh_database_is_migrated_to_head_matching_the_schema(database_url: str) -> None:
    await _open_and_close(database_url)

    assert await _on_connection(database_url, _revision) == _head() == HEAD
    assert await _on_connection(database_url, _drift) == []
    assert await _on_connection(database_url, _tables) == {*metadata.tables, VERSION_TABLE}


async def test_opening_again_keeps_data_and_revision(database_url: str) -> None:
    record = TurnStore("conv-1").add_user_text("kept").to_record()
    store = SqlStore(database_url)
    await store.open()
    await store.write_turns([record])
    await store.close()

    await _open_and_close(database_url)
    await _open_and_close(database_url)

    assert await _on_connection(database_url, _revision) == HEAD
    reopened = SqlStore(database_url)
    await reopened.open()
    try:
        assert await reopened.load_turns("conv-1") == [record]
    finally:
        await reopened.close()


async def test_downgrade_to_base_removes_the_tables_and_open_restores_them(
    database_url: str,
) -> None:
    await _open_and_close(database_url)

    def downgrade(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "base")

    await _on_connection(database_url, downgrade)
    assert await _on_connection(database_url, _tables) == {VERSION_TABLE}
    assert await _on_connection(database_url, _revision) is None

    await _open_and_close(database_url)
    assert await _on_connection(database_url, _drift) == []


async def test_a_create_all_era_sqlite_file_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "voxline.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(CREATE_ALL_ERA_SQLITE)
        raw.execute(
            "INSERT INTO conversations VALUES ('conv-old', 'concierge', 'phone:+1', 'sms',"
            " 10.5, 20.25, '{\"k\": 1}')"
        )
    raw.close()
    url = f"sqlite+aiosqlite:///{path}"

    store = SqlStore(url)
    await store.open()
    try:
        assert await store.get_conversation("conv-old") == ConversationRecord(
            id="conv-old",
            agent="concierge",
            subject="phone:+1",
            channel="sms",
            created_at=10.5,
            updated_at=20.25,
            metadata={"k": 1},
        )
        agent = AgentRecord(id="ag-1", name="support", spec={})
        await store.save_agent(agent)
        assert await store.get_agent("ag-1") == agent
    finally:
        await store.close()

    assert await _on_connection(url, _revision) == HEAD
    assert await _on_connection(url, _drift) == []
    assert await _on_connection(url, _tables) == {*metadata.tables, VERSION_TABLE}


# Each worker imports first, says so, then waits for the word, so that the opens really overlap.
_WORKER = """
import asyncio, sys
from voxline.store.sql import SqlStore

async def main() -> None:
    store = SqlStore(sys.argv[1])
    await store.open()
    await store.close()

print("ready", flush=True)
sys.stdin.readline()
asyncio.run(main())
"""


async def test_workers_opening_one_database_at_once_all_succeed(database_url: str) -> None:
    pipe = asyncio.subprocess.PIPE
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, database_url, stdin=pipe, stdout=pipe, stderr=pipe
        )
        for _ in range(3)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert await worker.stdout.readline() == b"ready\n"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"go\n")
    results = [await worker.communicate() for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0, 0], [err for _, err in results]
    assert await _on_connection(database_url, _revision) == HEAD
    assert await _on_connection(database_url, _drift) == []
