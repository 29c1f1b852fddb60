"""Pick and open the store or broker the settings name, so callers never import a backend."""

from __future__ import annotations

from voxline.settings import Settings
from voxline.store.base import EventBroker, PlatformStore
from voxline.store.brokers import InProcessBroker, RedisBroker
from voxline.store.redis_store import RedisStore
from voxline.store.sql import SqlStore

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


async def open_store(url: str | None = None, settings: Settings | None = None) -> PlatformStore:
    """An opened store for `url`, or for the settings' database URL (SQLite in the data dir).

    A Redis URL gives a `RedisStore` under the settings' key prefix; anything else goes to
    `SqlStore`, which names the schemes it accepts when it cannot serve one.
    """
    settings = settings or Settings()
    if url is None:
        url = settings.resolved_database_url()
    store: PlatformStore
    if url.startswith(REDIS_SCHEMES):
        store = RedisStore(url, prefix=settings.redis_key_prefix)
    else:
        store = SqlStore(url)
    await store.open()
    return store


async def open_broker(settings: Settings | None = None) -> EventBroker:
    """Redis pub/sub when `redis_url` is set (events reach every worker), else in-process."""
    settings = settings or Settings()
    if settings.redis_url is None:
        return InProcessBroker(queue_size=settings.event_queue_size)
    broker = RedisBroker(
        settings.redis_url, prefix=settings.redis_key_prefix, queue_size=settings.event_queue_size
    )
    await broker.open()
    return broker
