"""`open_store` resolves the URL from its argument or the settings and hands back an open store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.conftest import REDIS_URL, redis_prefix
from voxline.conversation.turns import TurnStore
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.store.factory import open_store
from voxline.store.redis_store import RedisStore


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the developer's environment and .env file out of the settings under test."""
    monkeypatch.delenv("VOXLINE_DATABASE_URL", raising=False)
    monkeypatch.delenv("VOXLINE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


async def _assert_usable(store: Store) -> None:
    record = TurnStore("conv-1").add_user_text("hello").to_record()
    await store.write_turns([record])
    assert await store.load_turns("conv-1") == [record]


async def test_an_explicit_url_wins(tmp_path: Path) -> None:
    path = tmp_path / "explicit.db"
    store = await open_store(f"sqlite:///{path}", Settings(data_dir=tmp_path / "unused"))
    try:
        await _assert_usable(store)
    finally:
        await store.close()

    assert path.exists()
    assert not (tmp_path / "unused").exists()


async def test_the_default_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    store = await open_store(settings=Settings(data_dir=tmp_path / "data"))
    try:
        await _assert_usable(store)
    finally:
        await store.close()

    assert (tmp_path / "data" / "voxline.db").exists()


async def test_without_arguments_the_environment_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXLINE_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    store = await open_store()
    try:
        await _assert_usable(store)
    finally:
        await store.close()

    assert (tmp_path / "env.db").exists()


async def test_a_redis_url_opens_a_redis_store_under_the_configured_prefix() -> None:
    async with redis_prefix() as prefix:
        store = await open_store(REDIS_URL, Settings(redis_key_prefix=prefix))
        try:
            assert isinstance(store, RedisStore)
            await _assert_usable(store)
            assert repr(store) == f"RedisStore(prefix={prefix!r})"
        finally:
            await store.close()
