"""`/metrics` after scripted calls: the counters and histograms a call moves, by how much, who
may scrape, and the one-line counters of providers and the turn sync.

Metrics are process-wide and other tests in this process move them too, so every assertion is
on the difference between a scrape before and a scrape after.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from tests.server.conftest import API_KEY, EnvFactory
from tests.server.twilio_emulator import eventually
from tests.telemetry.conftest import sample, scrape
from voxline.providers.llm.base import LLMError, LLMRequest, TextDelta
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.providers.llm.fallback import FallbackLLM
from voxline.providers.llm.openai_compat import OpenAICompatibleLLM
from voxline.telemetry import counters, labels

SHIPPED = "Your order A17 shipped yesterday and arrives on Friday, as planned."
VOICE = {"agent": "shop", "channel": "voice"}


def delta(before: str, after: str, name: str, **labels: str) -> float:
    return sample(after, name, **labels) - sample(before, name, **labels)


async def test_a_relay_call_moves_the_counters_and_histograms(make_env: EnvFactory) -> None:
    script = [
        FakeReply(
            tool_calls=[
                FakeToolCall("lookup_order", {"order_id": "A17"}),
                FakeToolCall("refund", {"order_id": "A17", "amount": 5.0}),
            ]
        ),
        FakeReply(text=SHIPPED, token_delay=0.05),
        "Sure, what else?",
    ]
    async with make_env(script) as env:
        base = env.twilio.base
        before = await scrape(base)
        async with env.twilio.relay(await env.twilio.call()) as twilio:
            await twilio.prompt("where is my order A17?")
            heard = ""
            while len(heard.split()) < 4:
                heard += (await twilio.next())["token"]
            live = await scrape(base)
            assert delta(before, live, "voxline_sessions_live", **VOICE) == 1
            await twilio.send({"type": "interrupt", "utteranceUntilInterrupt": "Your order A17"})
            await twilio.prompt("and can you also check B2?")
            tail = ""
            while not tail.endswith("Sure, what else?"):
                tail += (await twilio.next())["token"] or ""
        await env.idle()
        after = await scrape(base)

    assert delta(before, after, "voxline_sessions_total", **VOICE) == 1
    assert delta(before, after, "voxline_sessions_live", **VOICE) == 0
    assert delta(before, after, "voxline_turns_total", **VOICE) == 2
    assert delta(before, after, "voxline_replies_total", outcome="finished", **VOICE) == 1
    assert delta(before, after, "voxline_replies_total", outcome="interrupted", **VOICE) == 1
    assert delta(before, after, "voxline_interruptions_total", kind="committed", **VOICE) == 1
    tools = {"agent": "shop", "tool": "lookup_order"}
    assert delta(before, after, "voxline_tool_calls_total", outcome="ok", **tools) == 1
    refund = {"agent": "shop", "tool": "refund"}
    assert delta(before, after, "voxline_tool_calls_total", outcome="pending_approval", **refund)
    assert delta(before, after, "voxline_approvals_requested_total", **refund) == 1
    assert sample(after, "voxline_approvals_pending") == 1  # the store's count: this test's db
    # Three model requests, but the one the caller interrupted never finished its stream, so
    # only two report a time to first token.
    ttft = {"agent": "shop", "provider": "fake"}
    assert delta(before, after, "voxline_llm_time_to_first_token_seconds_count", **ttft) == 2
    assert delta(before, after, "voxline_llm_request_duration_seconds_count", **ttft) == 2
    assert delta(before, after, "voxline_turn_sync_lag_seconds_count") >= 1
    assert sample(after, "voxline_turn_sync_in_progress") == 0
    assert sample(after, "voxline_workers") >= 1
    assert sample(after, "voxline_store_reachable") == 1
    assert sample(after, "voxline_broker_healthy") == 1
    assert "CA1111" not in after and "+1415" not in after  # no call ids or numbers as labels


async def test_who_may_scrape(make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_env() as env:
        assert "voxline_workers" in await scrape(env.twilio.base)  # this machine: open
    monkeypatch.setenv("VOXLINE_METRICS_LOOPBACK_OPEN", "false")
    monkeypatch.setenv("VOXLINE_METRICS_TOKEN", "scrape-token-for-tests")
    async with make_env() as env, httpx.AsyncClient(base_url=env.twilio.base) as client:
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
        assert "voxline_workers" in await scrape(env.twilio.base, token="scrape-token-for-tests")
        assert "voxline_workers" in await scrape(env.twilio.base, token=API_KEY)
    monkeypatch.delenv("VOXLINE_METRICS_TOKEN")
    async with make_env(api_key=None) as env, httpx.AsyncClient(base_url=env.twilio.base) as c:
        nothing_to_check = await c.get("/metrics")
        assert nothing_to_check.status_code == 403
        assert "VOXLINE_METRICS_TOKEN" in nothing_to_check.text
    monkeypatch.setenv("VOXLINE_METRICS_ENABLED", "false")
    async with make_env() as env, httpx.AsyncClient(base_url=env.twilio.base) as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_provider_failures_and_fallbacks_are_counted(make_env: EnvFactory) -> None:
    async with make_env() as env:
        before = await scrape(env.twilio.base)
        primary = FakeLLM([FakeReply(fail_before=LLMError("down", provider="fake:primary"))])
        chain = FallbackLLM([primary, FakeLLM(["hello"], label="fake:backup")])
        events = [event async for event in chain.stream(LLMRequest(messages=[]))]
        assert [e.text for e in events if isinstance(e, TextDelta)] == ["hello"]
        # nothing listens on this port: a connection failure, counted as request and failure
        url = f"http://127.0.0.1:{closed_port()}/v1"
        model = OpenAICompatibleLLM("m", base_url=url, max_retries=0, connect_timeout=2)
        with pytest.raises(LLMError):
            async for _ in model.stream(LLMRequest(messages=[])):
                pass
        await model.aclose()
        counters.broker_reconnect("redis")
        after = await scrape(env.twilio.base)
    assert delta(before, after, "voxline_llm_fallbacks_total", provider="fake") == 1
    compat = {"role": "llm", "provider": "openai-compatible:m"}
    assert delta(before, after, "voxline_provider_requests_total", **compat) == 1
    assert delta(before, after, "voxline_provider_failures_total", **compat) == 1
    assert delta(before, after, "voxline_broker_reconnects_total", broker="redis") == 1


def test_label_values_are_capped() -> None:
    capped = labels.BoundedValues(limit=3)
    assert [capped(f"agent-{i}") for i in range(5)] == [
        "agent-0",
        "agent-1",
        "agent-2",
        labels.OTHER,
        labels.OTHER,
    ]
    assert capped("agent-1") == "agent-1"
    assert capped(None) == labels.NONE
    assert len(capped("x" * 500)) <= labels.MAX_LENGTH


async def test_write_behind_counts_a_batch_in_progress_until_the_store_takes_it() -> None:
    from prometheus_client import REGISTRY

    def in_progress() -> float | None:
        return REGISTRY.get_sample_value("voxline_turn_sync_in_progress")

    counters.provider_request("llm", "warm")  # the metrics exist from here on
    started = in_progress()
    assert started is not None
    release = asyncio.Event()
    push = asyncio.create_task(counters.write_behind(release.wait(), waited=0.05))
    await eventually(lambda: in_progress() == started + 1)
    release.set()
    await push
    assert in_progress() == started


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
