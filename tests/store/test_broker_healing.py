"""`RedisBroker` heals: a Redis that dies, freezes or restarts never ends a subscription, and
while it is gone publishing fails fast with a typed error and `healthy` says so.

Every test runs its own redis-server (tests/store/private_redis.py) so it can kill it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.store.private_redis import PrivateRedis, private_redis
from voxline.store.brokers import BrokerUnavailableError, RedisBroker, Subscription

OUTAGE = 10.0  # the "Redis stopped for 10 s"
HEAL_WITHIN = 5.0  # seconds after Redis is back by which events flow again (cap 2 s + jitter)
PATIENCE = 10.0  # a guard against hanging, never a speed requirement


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    async with private_redis(tmp_path) as server:
        yield server


class Collector:
    """Consumes a subscription in the background, as a feed socket or `WorkerLink` does."""

    def __init__(self, subscription: Subscription) -> None:
        self.messages: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._run(subscription))

    async def _run(self, subscription: Subscription) -> None:
        async for message in subscription:
            self.messages.append(message)

    async def wait_for(self, message: dict[str, Any], within: float = PATIENCE) -> None:
        async with asyncio.timeout(within):
            while message not in self.messages:  # noqa: ASYNC110 - the task fills it
                await asyncio.sleep(0.01)


async def until(condition: Any, within: float = PATIENCE) -> float:
    """Seconds it took for `condition()` to hold."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the broker changes state in the background
            await asyncio.sleep(0.01)
    return time.monotonic() - started


async def publish_fails_fast(broker: RedisBroker, within: float = 1.0) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="cannot publish to Redis"):
        await broker.publish("call:1", {"lost": True})
    assert time.monotonic() - started < within


async def test_a_ten_second_outage_heals_every_subscription(redis_server: PrivateRedis) -> None:
    worker_1 = RedisBroker(redis_server.url, prefix="heal:")
    worker_2 = RedisBroker(redis_server.url, prefix="heal:")
    await worker_1.open()
    await worker_2.open()
    try:
        call_1 = Collector(worker_1.subscribe("call:1"))
        listener_1 = Collector(worker_1.subscribe("listener:1"))
        call_2 = Collector(worker_2.subscribe("call:1"))
        await worker_2.publish("call:1", {"n": "before"})
        await call_1.wait_for({"n": "before"})
        assert worker_1.healthy and worker_1.problem is None

        await redis_server.kill()
        await until(lambda: not worker_1.healthy and not worker_2.healthy)
        assert worker_1.problem is not None
        assert re.match(r"redis unreachable since \d\d:\d\d:\d\d UTC: .+", worker_1.problem)
        down_until = time.monotonic() + OUTAGE
        while time.monotonic() < down_until:
            await publish_fails_fast(worker_2)
            await asyncio.sleep(0.5)
        assert not any(c.task.done() for c in (call_1, listener_1, call_2))
        assert not worker_1.healthy

        await redis_server.start()
        healed_after = await until(lambda: worker_1.healthy and worker_2.healthy, HEAL_WITHIN)
        await worker_2.publish("call:1", {"n": "after"})
        await worker_2.publish("listener:1", {"n": "after"})
        await worker_1.publish("call:1", {"n": "from 1"})
        for collector, message in (
            (call_1, {"n": "after"}),
            (listener_1, {"n": "after"}),
            (call_2, {"n": "after"}),
            (call_2, {"n": "from 1"}),
        ):
            await collector.wait_for(message, within=HEAL_WITHIN)
        assert {"lost": True} not in call_1.messages  # published while down: refused, not queued
        assert worker_1.reconnects == 1
        assert healed_after < HEAL_WITHIN
    finally:
        await worker_1.close()
        await worker_2.close()
    for collector in (call_1, listener_1, call_2):  # closing the broker ends them cleanly
        async with asyncio.timeout(PATIENCE):
            await collector.task


async def test_outage_after_outage_heals_each_time(redis_server: PrivateRedis) -> None:
    broker = RedisBroker(redis_server.url, prefix="again:", reconnect_delay=0.05)
    await broker.open()
    try:
        calls = Collector(broker.subscribe("call:1"))
        for round_ in range(3):
            await redis_server.kill()
            await until(lambda: not broker.healthy)
            await publish_fails_fast(broker)
            await asyncio.sleep(0.5)
            await redis_server.start()
            await until(lambda: broker.healthy, HEAL_WITHIN)
            await broker.publish("call:1", {"round": round_})
            await calls.wait_for({"round": round_}, within=HEAL_WITHIN)
        assert broker.reconnects == 3
        assert not calls.task.done()
    finally:
        await broker.close()


async def test_a_frozen_server_counts_as_down_and_heals(redis_server: PrivateRedis) -> None:
    """SIGSTOP keeps the sockets open and answers nothing: a cut network, not a crash."""
    broker = RedisBroker(
        redis_server.url,
        prefix="frozen:",
        ping_interval=0.2,
        publish_timeout=0.3,
        connect_timeout=0.5,
    )
    await broker.open()
    try:
        calls = Collector(broker.subscribe("call:1"))
        redis_server.freeze()
        await until(lambda: not broker.healthy)
        await publish_fails_fast(broker)
        await asyncio.sleep(1.0)
        assert broker.problem is not None and not calls.task.done()

        redis_server.thaw()
        await until(lambda: broker.healthy, HEAL_WITHIN)
        await broker.publish("call:1", {"n": "thawed"})
        await calls.wait_for({"n": "thawed"}, within=HEAL_WITHIN)
    finally:
        await broker.close()


async def test_opening_without_a_server_fails_fast_and_typed(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)  # never started: the port refuses
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="cannot reach Redis"):
        await RedisBroker(server.url).open()
    assert time.monotonic() - started < 3.0


def test_reconnect_delays_double_up_to_the_cap_with_jitter() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0", reconnect_delay=0.1, reconnect_max_delay=2.0)
    for failures, full in ((1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0), (500, 2.0)):
        delays = {broker._backoff(failures) for _ in range(50)}
        assert all(full / 2 <= delay <= full for delay in delays), (failures, delays)
        assert len(delays) > 1  # jittered


async def test_the_health_view_of_a_closed_broker(redis_server: PrivateRedis) -> None:
    broker = RedisBroker(redis_server.url, prefix="closed:")
    assert not broker.healthy and broker.problem == "the Redis broker is not open"
    await broker.open()
    assert broker.healthy
    await broker.close()
    assert not broker.healthy


async def test_foreign_junk_under_the_prefix_is_skipped(redis_server: PrivateRedis) -> None:
    """Something else publishing under our prefix must not end or break a subscription."""
    broker = RedisBroker(redis_server.url, prefix="junk:")
    await broker.open()
    raw = Redis.from_url(redis_server.url)
    try:
        subscription = broker.subscribe("call:1")
        for junk in ("not json", "[1, 2]", '"text"'):
            await raw.publish("junk:events:call:1", junk)
        await broker.publish("call:1", {"n": 1})
        async with asyncio.timeout(PATIENCE):
            assert await anext(subscription) == {"n": 1}
        assert subscription.undecodable == 3
    finally:
        await raw.aclose()
        await broker.close()
