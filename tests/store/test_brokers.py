"""`EventBroker`s: the same behaviour in process and through Redis, plus what only Redis adds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.store.conftest import REDIS_URL, redis_prefix
from tests.store.tcp_relay import TcpRelay
from voxline.settings import Settings
from voxline.store.base import EventBroker
from voxline.store.brokers import (
    BrokerUnavailableError,
    InProcessBroker,
    RedisBroker,
    Subscription,
)
from voxline.store.errors import BrokerConnectionError
from voxline.store.factory import open_broker

# Only a guard against hanging forever when an event never comes; never a speed requirement.
PATIENCE = 10.0

Broker = InProcessBroker | RedisBroker
BrokerMaker = Callable[..., Broker]


@pytest.fixture(params=["in-process", "redis"])
async def make_broker(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """Makes opened brokers (all sharing one Redis prefix: the same deployment) and closes them."""
    made: list[Broker] = []
    async with contextlib.AsyncExitStack() as stack:
        prefix = await stack.enter_async_context(redis_prefix()) if request.param == "redis" else ""

        async def make(**options: Any) -> Broker:
            broker: Broker
            if request.param == "redis":
                broker = RedisBroker(REDIS_URL, prefix=prefix, **options)
                await broker.open()
            else:
                broker = InProcessBroker(**options)
            made.append(broker)
            return broker

        yield make
        for broker in made:
            await broker.close()


async def _take(subscription: Subscription, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(PATIENCE):
        return [await anext(subscription) for _ in range(count)]


async def test_the_brokers_satisfy_the_protocol(make_broker: Callable[..., Any]) -> None:
    assert isinstance(await make_broker(), EventBroker)


async def test_every_subscriber_gets_every_message_in_publish_order(
    make_broker: Callable[..., Any],
) -> None:
    broker = await make_broker()
    first = broker.subscribe("call:1")
    second = broker.subscribe("call:1")
    messages = [{"type": "bot_text", "n": n, "text": "héllo ✓"} for n in range(50)]

    for message in messages:
        await broker.publish("call:1", message)

    assert await _take(first, 50) == messages
    assert await _take(second, 50) == messages


async def test_channels_are_separate(make_broker: Callable[..., Any]) -> None:
    broker = await make_broker()
    calls = broker.subscribe("call:1")
    listener = broker.subscribe("listener:1")

    await broker.publish("listener:1", {"for": "listener"})
    await broker.publish("call:1", {"for": "call"})

    assert await _take(calls, 1) == [{"for": "call"}]
    assert await _take(listener, 1) == [{"for": "listener"}]


async def test_a_closed_subscription_stops_and_the_others_go_on(
    make_broker: Callable[..., Any],
) -> None:
    broker = await make_broker()
    leaving = broker.subscribe("call:1")
    staying = broker.subscribe("call:1")
    await broker.publish("call:1", {"n": 1})
    assert await _take(leaving, 1) == [{"n": 1}]

    await leaving.aclose()
    await broker.publish("call:1", {"n": 2})

    assert [message async for message in leaving] == []
    assert await _take(staying, 2) == [{"n": 1}, {"n": 2}]


async def test_closing_the_broker_ends_iteration_cleanly(make_broker: Callable[..., Any]) -> None:
    broker = await make_broker()
    subscription = broker.subscribe("call:1")
    received: list[dict[str, Any]] = []

    async def consume() -> None:
        async for message in subscription:
            received.append(message)

    consumer = asyncio.create_task(consume())
    await broker.publish("call:1", {"n": 1})
    async with asyncio.timeout(PATIENCE):
        while not received:  # noqa: ASYNC110 - waiting for the consumer task to see it
            await asyncio.sleep(0.01)
    await broker.close()

    async with asyncio.timeout(PATIENCE):
        await consumer
    assert received == [{"n": 1}]


async def test_a_full_queue_drops_its_oldest_and_counts(make_broker: Callable[..., Any]) -> None:
    broker = await make_broker(queue_size=3)
    slow = broker.subscribe("call:1")
    fast = broker.subscribe("call:1")
    got_fast: list[dict[str, Any]] = []
    for n in range(5):
        await broker.publish("call:1", {"n": n})
        got_fast += await _take(fast, 1)

    async with asyncio.timeout(PATIENCE):
        while slow.dropped < 2:  # noqa: ASYNC110 - Redis delivers in the background
            await asyncio.sleep(0.01)

    assert got_fast == [{"n": n} for n in range(5)]
    assert await _take(slow, 3) == [{"n": 2}, {"n": 3}, {"n": 4}]
    assert (slow.dropped, fast.dropped, broker.dropped) == (2, 0, 2)


async def test_a_message_that_is_not_json_is_refused_at_publish(
    make_broker: Callable[..., Any],
) -> None:
    broker = await make_broker()

    with pytest.raises(TypeError):
        await broker.publish("call:1", {"when": object()})


# -- across workers (Redis) ------------------------------------------------------------------
async def test_two_workers_exchange_events_through_redis() -> None:
    async with redis_prefix() as prefix:
        first, second = RedisBroker(REDIS_URL, prefix=prefix), RedisBroker(REDIS_URL, prefix=prefix)
        other_deployment = RedisBroker(REDIS_URL, prefix=prefix + "other:")
        for broker in (first, second, other_deployment):
            await broker.open()
        try:
            on_first = first.subscribe("listener:1")
            on_second = second.subscribe("listener:1")
            elsewhere = other_deployment.subscribe("listener:1")

            await second.publish("listener:1", {"from": "worker 2"})
            await first.publish("listener:1", {"from": "worker 1"})

            expected = [{"from": "worker 2"}, {"from": "worker 1"}]
            assert await _take(on_first, 2) == expected
            assert await _take(on_second, 2) == expected
        finally:
            for broker in (first, second, other_deployment):
                await broker.close()
        assert [message async for message in elsewhere] == []


def _redis_relay() -> TcpRelay:
    """A relay to the test Redis, so a test can cut a broker's connections without touching
    others."""
    upstream = Redis.from_url(REDIS_URL).connection_pool.connection_kwargs
    return TcpRelay(upstream["host"], upstream["port"])


async def _relayed_url(relay: TcpRelay) -> str:
    return f"redis://127.0.0.1:{await relay.start()}/0"


async def test_a_broker_reconnects_after_losing_its_connection() -> None:
    relay = _redis_relay()
    raw = Redis.from_url(REDIS_URL)
    async with redis_prefix() as prefix:
        broker = RedisBroker(await _relayed_url(relay), prefix=prefix, reconnect_delay=0.01)
        await broker.open()
        subscription = broker.subscribe("call:1")
        channel = prefix + "events:call:1"
        try:
            relay.cut()
            # Probe until one gets through: only then is the broker surely listening again.
            async with asyncio.timeout(PATIENCE):
                while True:
                    await raw.publish(channel, '{"probe": true}')
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.05):
                            assert await anext(subscription) == {"probe": True}
                            break
            await raw.publish(channel, '{"after": "reconnect"}')

            async with asyncio.timeout(PATIENCE):
                async for message in subscription:
                    if message != {"probe": True}:
                        assert message == {"after": "reconnect"}
                        break
        finally:
            await broker.close()
            await relay.stop()
            await raw.aclose()


async def test_a_lost_server_keeps_subscriptions_and_fails_publishes_clearly() -> None:
    relay = _redis_relay()
    async with redis_prefix() as prefix:
        broker = RedisBroker(await _relayed_url(relay), prefix=prefix, reconnect_delay=0.01)
        await broker.open()
        subscription = broker.subscribe("call:1")
        try:
            await relay.stop()
            async with asyncio.timeout(PATIENCE):
                while broker.healthy:  # noqa: ASYNC110 - the listener notices in the background
                    await asyncio.sleep(0.01)
            assert broker.problem is not None
            assert broker.problem.startswith("redis unreachable since")
            with pytest.raises(BrokerUnavailableError, match="cannot publish"):
                await broker.publish("call:1", {"n": 1})
            with pytest.raises(TimeoutError):  # still waiting, not ended
                async with asyncio.timeout(0.2):
                    await anext(subscription)
        finally:
            await broker.close()
        assert [message async for message in subscription] == []


async def test_opening_a_broker_without_a_server_fails_clearly() -> None:
    relay = _redis_relay()
    url = await _relayed_url(relay)
    await relay.stop()

    with pytest.raises(BrokerConnectionError, match="cannot reach Redis"):
        await RedisBroker(url).open()


# -- open_broker -----------------------------------------------------------------------------
async def test_open_broker_is_in_process_without_a_redis_url() -> None:
    broker = await open_broker(Settings(redis_url=None, event_queue_size=7))
    try:
        assert isinstance(broker, InProcessBroker)
    finally:
        await broker.close()


async def test_open_broker_uses_redis_when_configured() -> None:
    async with redis_prefix() as prefix:
        worker_1 = await open_broker(Settings(redis_url=REDIS_URL, redis_key_prefix=prefix))
        worker_2 = await open_broker(Settings(redis_url=REDIS_URL, redis_key_prefix=prefix))
        try:
            assert isinstance(worker_1, RedisBroker)
            subscription = worker_1.subscribe("call:1")
            assert isinstance(subscription, Subscription)
            await worker_2.publish("call:1", {"n": 1})
            assert await _take(subscription, 1) == [{"n": 1}]
        finally:
            await worker_1.close()
            await worker_2.close()
