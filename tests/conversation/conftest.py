"""What the session tests share: a real SQLite store and settings on the fake model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxline.settings import Settings
from voxline.store.base import Store
from voxline.store.sql import SqlStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    db = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'voxline.db'}")
    await db.open()
    yield db
    await db.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", llm="fake")
