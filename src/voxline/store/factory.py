"""Pick and open the store a URL names, so callers never import a backend directly."""

from __future__ import annotations

from voxline.settings import Settings
from voxline.store.base import PlatformStore
from voxline.store.sql import SqlStore


async def open_store(url: str | None = None, settings: Settings | None = None) -> PlatformStore:
    """An opened store for `url`, or for the settings' database URL (SQLite in the data dir)."""
    if url is None:
        url = (settings or Settings()).resolved_database_url()
    store = SqlStore(url)
    await store.open()
    return store
