"""Backends the store contract suite runs against: add a backend by adding one factory here.

A factory is an async context manager that yields an opened, empty store and removes whatever it
created on exit. Backends that need a server skip (with the reason) where none is reachable, except
in CI (the CI environment variable set, as `.ci/run` does): there a missing server or driver fails
the test, so the contract suites can never pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import NoReturn

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from voxline.store.base import PlatformStore
from voxline.store.redis_store import RedisStore
from voxline.store.sql import SqlStore, parse_database_url

StoreFactory = Callable[[Path], AbstractAsyncContextManager[PlatformStore]]

POSTGRES_URL = os.environ.get(
    "VOXLINE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("VOXLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip with `reason` on a developer's machine; fail in CI, where the server must be up."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: .ci/run starts PostgreSQL and Redis)", pytrace=False)
    pytest.skip(reason)


@asynccontextmanager
async def _opened(store: PlatformStore) -> AsyncIterator[PlatformStore]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def sqlite_file(tmp_path: Path) -> AbstractAsyncContextManager[PlatformStore]:
    return _opened(SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'voxline.db'}"))


def sqlite_memory(_tmp_path: Path) -> AbstractAsyncContextManager[PlatformStore]:
    return _opened(SqlStore("sqlite+aiosqlite://"))


@asynccontextmanager
async def scratch_postgres_url() -> AsyncIterator[str]:
    """A new, empty database on the server at VOXLINE_TEST_POSTGRES_URL, dropped after use."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        unavailable("asyncpg is not installed (the dev extra has it)")
    server = parse_database_url(POSTGRES_URL)
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    name = f"voxline_test_{uuid.uuid4().hex[:12]}"
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        await admin.dispose()
        unavailable(f"PostgreSQL not reachable at {server.host}:{server.port}: {exc}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@asynccontextmanager
async def postgres(_tmp_path: Path) -> AsyncIterator[PlatformStore]:
    async with scratch_postgres_url() as url, _opened(SqlStore(url)) as store:
        yield store


@asynccontextmanager
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix no other test uses on the Redis at VOXLINE_TEST_REDIS_URL, emptied after."""
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except RedisConnectionError as exc:
        await client.aclose()
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    prefix = f"voxline-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@asynccontextmanager
async def redis(_tmp_path: Path) -> AsyncIterator[PlatformStore]:
    async with redis_prefix() as prefix, _opened(RedisStore(REDIS_URL, prefix=prefix)) as store:
        yield store


STORE_FACTORIES: dict[str, StoreFactory] = {
    "sqlite-file": sqlite_file,
    "sqlite-memory": sqlite_memory,
    "postgres": postgres,
    "redis": redis,
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PlatformStore]:
    async with STORE_FACTORIES[request.param](tmp_path) as opened:
        yield opened
