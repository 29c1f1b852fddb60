"""Traces of a scripted ConversationRelay call, caught by an in-process span exporter: the call →
turn → model request / tool call tree, its attributes and parent links, no transcript text
unless asked for, and the trace ids in log lines and on the debug feed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.server.conftest import Env, EnvFactory
from voxline.providers.llm.fake import FakeReply, FakeToolCall
from voxline.server.feed import call_channel
from voxline.telemetry import trace_ids, tracing
from voxline.telemetry.logs import add_trace_ids

QUESTION = "where is my order A17?"
SHIPPED = "Your order A17 shipped yesterday and arrives on Friday."
CALL_SID = "CA" + "1" * 32
SCRIPT = [FakeReply(tool_calls=[FakeToolCall("lookup_order", {"order_id": "A17"})]), SHIPPED]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


async def call(env: Env) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One call: a question, a tool, an answer. Returns what the log processor added to a line
    bound to the call while it was live, and the debug feed's events."""
    shop = env.hub.agents["shop"]
    conversation = await env.hub.conversation_for(shop, "phone:+14155550100", "voice")
    feed = env.hub.broker.subscribe(call_channel(conversation))
    async with env.twilio.relay(await env.twilio.call()) as twilio:
        await twilio.prompt(QUESTION)
        assert await twilio.reply() == "One moment. " + SHIPPED  # the tool filler first
        logged = dict(add_trace_ids(None, "info", {"event": "x", "connection": CALL_SID}))
    await env.idle()
    events: list[dict[str, Any]] = []
    while not any(e["type"] == "session_closed" for e in events):
        async with asyncio.timeout(5):
            events.append(await anext(feed))
    await feed.aclose()
    return logged, events


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    found: int = span.context.span_id
    return found


async def test_call_turn_llm_and_tool_spans(
    make_env: EnvFactory, spans: InMemorySpanExporter
) -> None:
    async with make_env(SCRIPT) as env:
        logged, feed = await call(env)
    finished = spans.get_finished_spans()

    [root] = by_name(finished, "call")
    assert root.parent is None
    assert root.attributes is not None
    assert root.attributes["voxline.agent"] == "shop"
    assert root.attributes["voxline.channel"] == "voice"
    assert root.attributes["voxline.turns"] == 1
    [turn] = by_name(finished, "turn")
    assert parent_of(turn) == span_id(root)
    assert turn.attributes is not None
    assert turn.attributes["voxline.reply.outcome"] == "finished"
    assert turn.attributes["voxline.trigger"] == "user"

    requests = by_name(finished, "chat fake")
    assert len(requests) == 2  # the tool call, then the answer
    for request in requests:
        assert parent_of(request) == span_id(turn)
        attributes = request.attributes
        assert attributes is not None
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.request.model"] == "fake"
        assert attributes["gen_ai.usage.output_tokens"] >= 1  # type: ignore[operator]
        assert "gen_ai.usage.input_tokens" in attributes
        assert attributes["gen_ai.server.time_to_first_token"] >= 0  # type: ignore[operator]
        assert [event.name for event in request.events] == ["gen_ai.first_token"]
    [tool] = by_name(finished, "execute_tool lookup_order")
    assert parent_of(tool) == span_id(turn)
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.name"] == "lookup_order"
    assert tool.attributes["voxline.tool.outcome"] == "ok"
    assert "gen_ai.tool.call.arguments" not in tool.attributes
    first, answer = sorted(requests, key=lambda s: s.start_time or 0)
    assert (first.end_time or 0) <= (tool.start_time or 0) <= (answer.start_time or 0)

    trace_id = root.context.trace_id if root.context is not None else 0
    assert {span.context.trace_id for span in finished if span.context} == {trace_id}
    everything = " ".join(str(v) for span in finished for v in (span.attributes or {}).values())
    assert "A17" not in everything and "shipped" not in everything  # no transcript text

    # a log line bound to the live call carries the ids of the span open at the time
    assert logged["trace_id"] == f"{trace_id:032x}"
    assert logged["span_id"] in {f"{span_id(root):016x}", f"{span_id(turn):016x}"}
    assert not trace_ids.active()  # the call is over: nothing left behind
    # the debug feed says which trace the call and its turn are
    traced = [event for event in feed if event["type"] == "trace"]
    assert [event["scope"] for event in traced] == ["call", "turn"]
    assert {event["trace_id"] for event in traced} == {f"{trace_id:032x}"}
    assert traced[1]["span_id"] == f"{span_id(turn):016x}"


async def test_transcript_text_only_when_asked_for(
    make_env: EnvFactory, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXLINE_TRACE_CONTENT", "true")
    async with make_env(SCRIPT) as env:
        await call(env)
    finished = spans.get_finished_spans()
    [turn] = by_name(finished, "turn")
    assert turn.attributes is not None
    assert turn.attributes["voxline.user.text"] == QUESTION
    assert turn.attributes["voxline.reply.text"] == SHIPPED
    [tool] = by_name(finished, "execute_tool lookup_order")
    assert tool.attributes is not None
    assert "A17" in str(tool.attributes["gen_ai.tool.call.arguments"])
    assert "shipped" in str(tool.attributes["gen_ai.tool.call.result"])


def test_tracing_is_off_unless_the_environment_asks() -> None:
    assert tracing.requested({}) is None
    assert tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == "otlp"
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "otlp"}) == "otlp"
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "console"}) == "console"
    both = {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    assert tracing.requested(both) is None
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}
    assert tracing.requested(disabled) is None


def test_log_lines_outside_a_trace_are_left_alone() -> None:
    line = {"event": "x", "connection": "nobody", "session_id": "conv_none"}
    assert add_trace_ids(None, "info", dict(line)) == line
