"""What `SqlStore` adds beyond the contract: URL handling, SQLite set-up, lifecycle errors."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from voxline.conversation.turns import TurnStore
from voxline.store.sql import DatabaseURLError, SqlStore, parse_database_url


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///voxline.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///voxline.db", "sqlite+aiosqlite"),
        ("postgres://me@db.local/voxline", "postgresql+asyncpg"),
        ("postgresql://me@db.local/voxline", "postgresql+asyncpg"),
        ("postgresql+asyncpg://me@db.local/voxline", "postgresql+asyncpg"),
    ],
)
def test_urls_are_normalised_to_their_async_driver(url: str, driver: str) -> None:
    assert parse_database_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://me:secret@db.local/voxline", "not a url", "redis://x"])
def test_an_unsupported_url_fails_at_construction_in_one_line(url: str) -> None:
    with pytest.raises(DatabaseURLError) as caught:
        SqlStore(url)

    message = str(caught.value)
    assert "\n" not in message
    assert "sqlite+aiosqlite:///" in message
    assert "secret" not in message


def test_repr_hides_the_password() -> None:
    assert "secret" not in repr(SqlStore("postgresql://me:secret@db.local/voxline"))


async def test_a_missing_driver_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # makes `import asyncpg` fail

    with pytest.raises(DatabaseURLError, match="pip install asyncpg"):
        await SqlStore("postgresql://me@127.0.0.1/voxline").open()


async def test_using_a_store_before_open_says_how_to_fix_it(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'voxline.db'}")

    with pytest.raises(RuntimeError, match=r"await store\.open\(\)"):
        await store.load_turns("conv-1")


async def test_open_creates_the_directory_and_enables_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "voxline.db"
    store = SqlStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    await store.open()  # idempotent
    try:
        await store.write_turns([TurnStore("conv-1").add_user_text("hi").to_record()])
    finally:
        await store.close()

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT count(*) FROM turns").fetchone()[0] == 1


async def test_reopening_an_existing_file_keeps_its_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'voxline.db'}"
    record = TurnStore("conv-1").add_bot_text("kept").to_record()
    first = SqlStore(url)
    await first.open()
    await first.write_turns([record])
    await first.close()

    second = SqlStore(url)
    await second.open()
    try:
        assert await second.load_turns("conv-1") == [record]
    finally:
        await second.close()
