"""A server whose Redis or database goes away: /health says so, cross-worker API calls and
store-backed calls answer 503 JSON with the reason, and everything works again once the
dependency is back: debug feeds and the worker link are still subscribed.

Redis is a private redis-server (tests/store/private_redis.py) the test kills and restarts;
the database outages are a PostgreSQL reached through a relay the test cuts, and an engine
pointed at a port where nothing listens."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.api.conftest import KEY, ApiClient
from tests.ports import free_port
from tests.server.twilio_emulator import ACCOUNT, PUBLIC, TOKEN, WAIT, Twilio, running
from tests.store.conftest import scratch_postgres_url
from tests.store.private_redis import PrivateRedis, private_redis
from tests.store.tcp_relay import TcpRelay
from voxline import Agent
from voxline.providers.llm.fake import FakeLLM
from voxline.server import ServerConfig, create_app
from voxline.server.api.calls import INJECT
from voxline.server.cluster import ClusterUnavailableError, LiveSubscription, WorkerLink
from voxline.server.feed import call_channel
from voxline.server.hub import ConversationHub
from voxline.settings import Settings
from voxline.store.base import ConversationRecord, EventBroker
from voxline.store.brokers import InProcessBroker, RedisBroker
from voxline.store.sql import SqlStore, parse_database_url

HEAL_WITHIN = 6.0  # seconds after a dependency returns by which the server is whole again
REDIS_OUTAGE = 4.0  # longer than the ~3 s that used to end every subscription for good


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, store: SqlStore, broker: EventBroker
) -> AsyncIterator[tuple[ApiClient, ConversationHub]]:
    settings = Settings(
        data_dir=tmp_path,
        llm="fake",
        public_url=PUBLIC,
        twilio_auth_token=TOKEN,
        twilio_account_sid=ACCOUNT,
        api_key=KEY,
        shutdown_grace_period=1.0,
    )
    llm = FakeLLM([])
    config = ServerConfig(
        agents=[Agent(name="front-desk", instructions="You are the front desk.")],
        settings=settings,
        llm=lambda agent: llm,
        store=store,
        broker=broker,
    )
    app = create_app(config)
    async with running(app) as (base, _):
        yield ApiClient(base, Twilio(base)), app.state.hub


async def until_health(client: ApiClient, status: str, within: float = WAIT) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=client.base) as http, asyncio.timeout(within):
        while True:
            body: dict[str, Any] = (await http.get("/health")).json()
            if body["status"] == status:
                return body
            await asyncio.sleep(0.05)


def assert_unavailable(response: httpx.Response, error: str) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"]
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}
    assert error in body["error"]
    assert body["detail"]
    return body


# -- Redis -----------------------------------------------------------------------------------
async def test_a_redis_outage_degrades_health_answers_503_and_heals(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        redis_server: PrivateRedis = await stack.enter_async_context(private_redis(tmp_path))
        store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'outage.db'}")
        await store.open()
        stack.push_async_callback(store.close)
        brokers = [RedisBroker(redis_server.url, prefix="outage:") for _ in range(2)]
        for broker in brokers:
            await broker.open()
            stack.push_async_callback(broker.close)
        here, elsewhere = brokers
        # Another worker that holds the call: it answers injection requests for it.
        other_worker = WorkerLink(elsewhere)
        injected: list[str] = []

        async def hold_call(message: dict[str, Any]) -> dict[str, Any] | None:
            injected.append(str(message["text"]))
            return {"delivered": True} if message.get("call_id") == "call-1" else None

        other_worker.handle(INJECT, hold_call)
        await other_worker.open()
        stack.push_async_callback(other_worker.close)
        await store.upsert_conversation(ConversationRecord(id="call-1", agent="front-desk"))
        client, _hub = await stack.enter_async_context(serving(tmp_path, store, here))

        assert await until_health(client, "ok") == {"status": "ok"}
        detail = (await client.call("GET", "/api/calls/call-1")).json()
        feed = await stack.enter_async_context(client.feed(detail["feed_url"]))
        inject = {"text": "hello", "role": "user"}
        assert (
            await client.call("POST", "/api/calls/call-1/messages", json=inject)
        ).status_code == 202

        await redis_server.kill()
        degraded = await until_health(client, "degraded")
        [problem] = degraded["problems"]
        assert problem.startswith("event broker: redis unreachable since")
        response = await client.call("POST", "/api/calls/call-1/messages", json=inject)
        assert "unreachable" in assert_unavailable(response, "other workers")["detail"]
        assert (await client.call("GET", "/api/calls/call-1")).status_code == 200  # store is fine
        await asyncio.sleep(REDIS_OUTAGE)

        await redis_server.start()
        started = time.monotonic()
        await until_health(client, "ok", within=HEAL_WITHIN)
        assert time.monotonic() - started < HEAL_WITHIN
        await until(lambda: elsewhere.healthy, HEAL_WITHIN)
        after = {"text": "back again", "role": "user"}
        response = await client.call("POST", "/api/calls/call-1/messages", json=after)
        assert response.status_code == 202, response.text
        assert injected == ["hello", "back again"]
        # The feed socket kept its subscription through the outage: events from another
        # worker reach it again.
        await elsewhere.publish(call_channel("call-1"), {"type": "probe", "n": 1})
        assert await feed.until("probe") == {"type": "probe", "n": 1}


async def until(condition: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - state changes in the background
            await asyncio.sleep(0.02)


# -- the database ----------------------------------------------------------------------------
async def test_postgres_going_away_answers_503_json(tmp_path: Path) -> None:
    pytest.importorskip("asyncpg", reason="asyncpg is not installed")
    async with scratch_postgres_url() as url:
        target = parse_database_url(url)
        relay = TcpRelay(target.host or "127.0.0.1", target.port or 5432)
        port = await relay.start()
        store = SqlStore(target.set(host="127.0.0.1", port=port).render_as_string(False))
        await store.open()
        try:
            async with serving(tmp_path, store, InProcessBroker()) as (client, _hub):
                assert (await client.call("GET", "/api/calls")).status_code == 200
                assert await until_health(client, "ok") == {"status": "ok"}

                await relay.stop()
                for path in ("/api/calls", "/api/agents", "/api/calls/anything"):
                    response = await client.call("GET", path)
                    assert_unavailable(response, "try again")
                degraded = await until_health(client, "degraded")
                assert [p.split(":")[0] for p in degraded["problems"]] == ["store"]
        finally:
            await store.close()


async def test_a_store_on_a_dead_port_answers_503_json_everywhere(tmp_path: Path) -> None:
    """The store was fine at start; then its engine points where nothing listens (the server
    moved or died): the REST API, an operator route and /health all say so in JSON."""
    pytest.importorskip("asyncpg", reason="asyncpg is not installed")
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'dead.db'}")
    await store.open()
    try:
        async with serving(tmp_path, store, InProcessBroker()) as (client, _hub):
            assert (await client.call("GET", "/api/calls")).status_code == 200
            alive = store._engine
            assert alive is not None
            dead = create_async_engine(f"postgresql+asyncpg://voxline@127.0.0.1:{free_port()}/x")
            store._engine = dead

            body = assert_unavailable(await client.call("GET", "/api/calls"), "try again")
            assert "refused" in body["detail"].lower() or "connect" in body["detail"].lower()
            # A Starlette (non-API) route that reads the store: JSON too, not text/plain.
            approvals = await client.call("GET", "/approvals")
            assert_unavailable(approvals, "try again")
            degraded = await until_health(client, "degraded")
            assert degraded["problems"][0].startswith("store: unreachable")
            store._engine = alive  # for the server's own shutdown, and close() below
            await dead.dispose()
    finally:
        await store.close()


async def test_an_unexpected_error_on_a_starlette_route_is_json(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'bug.db'}")
    await store.open()
    try:
        async with serving(tmp_path, store, InProcessBroker()) as (client, hub):

            def broken() -> Any:
                raise ValueError("a bug")

            hub.stats = broken  # type: ignore[method-assign]
            async with httpx.AsyncClient(base_url=client.base) as http:
                response = await http.get("/status")
            assert response.status_code == 500
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {"error": "internal server error", "detail": "ValueError"}
    finally:
        await store.close()


# -- the worker link, without servers --------------------------------------------------------
class FlakyBroker(InProcessBroker):
    """Ends (or breaks) every subscription on demand, as a misbehaving broker might."""

    def __init__(self) -> None:
        super().__init__()
        self.healthy_now = True
        self.subscribed = 0

    @property
    def healthy(self) -> bool:
        return self.healthy_now

    @property
    def problem(self) -> str | None:
        return None if self.healthy_now else "redis unreachable since 12:00:03 UTC: refused"

    def subscribe(self, channel: str) -> Any:
        self.subscribed += 1
        return super().subscribe(channel)

    def end_subscriptions(self) -> None:
        self._fanout.end_all()


async def test_a_live_subscription_survives_its_subscription_ending() -> None:
    broker = FlakyBroker()
    subscription = LiveSubscription(broker, "call:1")
    await broker.publish("call:1", {"n": 1})
    assert await anext(subscription) == {"n": 1}

    broker.end_subscriptions()
    reading = asyncio.create_task(anext(subscription))
    await until(lambda: broker.subscribed == 2, WAIT)
    await broker.publish("call:1", {"n": 2})
    async with asyncio.timeout(WAIT):
        assert await reading == {"n": 2}
    assert subscription.resubscribed == 1

    await broker.close()  # the end of the broker is the end of the subscription
    async with asyncio.timeout(WAIT):
        assert [m async for m in subscription] == []


async def test_the_worker_link_keeps_serving_and_refuses_typed_while_down() -> None:
    broker = FlakyBroker()
    asking, answering = WorkerLink(broker), WorkerLink(broker)

    async def answer(message: dict[str, Any]) -> dict[str, Any]:
        return {"echo": message["n"]}

    answering.handle("echo", answer)
    for link in (asking, answering):
        await link.open()
    try:
        first = await asking.request("echo", {"n": 1}, WAIT)
        assert first is not None and first["echo"] == 1
        broker.end_subscriptions()  # every subscription of both links ends at once
        await until(lambda: broker.subscribed == 8, WAIT)
        answer_2 = await asking.request("echo", {"n": 2}, WAIT)
        assert answer_2 is not None and answer_2["echo"] == 2

        broker.healthy_now = False
        started = time.monotonic()
        with pytest.raises(ClusterUnavailableError, match="redis unreachable"):
            await asking.request("echo", {"n": 3}, WAIT)
        assert time.monotonic() - started < 0.5
        assert asking.problem is not None
    finally:
        for link in (asking, answering):
            await link.close()
        await broker.close()
