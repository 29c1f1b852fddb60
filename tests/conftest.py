"""Suite-wide fixtures: fresh logging for every test, and for the session, voice and guardrail
tests a real SQLite store and settings on the fake model (folders that test other stores, such
as tests/store and tests/api, define their own `store`), and for the multi-worker tests a scratch
PostgreSQL database and Redis key prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog

from tests.store.conftest import redis_prefix, scratch_postgres_url
from voxline.guardrails.redact import reset_redaction
from voxline.logging import uninstall_stdlib_redaction
from voxline.providers.llm.base import ConfigurationError
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.store.sql import SqlStore

if TYPE_CHECKING:
    from voxline.providers.vad.silero import SileroVAD


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands under test configure structlog for the whole process (level, renderer); put the
    defaults back so one test's log level never hides another test's captured log lines."""
    yield
    structlog.reset_defaults()
    uninstall_stdlib_redaction()
    reset_redaction()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    db = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'voxline.db'}")
    await db.open()
    yield db
    await db.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", llm="fake")


@pytest.fixture
async def scratch_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for servers started as processes (skips, saying why,
    where PostgreSQL is not reachable)."""
    async with scratch_postgres_url() as url:
        yield url


@pytest.fixture
async def redis_key_prefix() -> AsyncIterator[str]:
    """A Redis key prefix of this test's own, for servers started as processes (skips where
    Redis is not reachable)."""
    async with redis_prefix() as prefix:
        yield prefix


@pytest.fixture(scope="session")
def silero() -> SileroVAD:
    """The embedded Silero model, able to batch calls (skips where it cannot)."""
    module = pytest.importorskip("voxline.providers.vad.silero")
    try:
        vad: SileroVAD = module.create_silero_vad()
    except ConfigurationError as exc:
        pytest.skip(f"the Silero model is not available: {exc}")
    if not vad.batchable:
        pytest.skip("the onnx package is missing: Silero runs unbatched")
    return vad
