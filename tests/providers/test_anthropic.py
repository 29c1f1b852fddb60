"""AnthropicLLM against a loopback server replaying Messages API event streams.

The event shapes follow the installed `anthropic` package's `RawMessageStreamEvent` types:
`message_start`, `content_block_start`, `content_block_delta` (`text_delta`, `input_json_delta`),
`content_block_stop`, `message_delta`, `message_stop`, plus `ping` and `error`.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.providers.chat_server import SSE, ChatServer, JSONReply, SSEEvent
from voxline.providers.llm.anthropic import AnthropicLLM
from voxline.providers.llm.base import (
    ChatMessage,
    ConfigurationError,
    LLMError,
    LLMEvent,
    LLMRequest,
    TextDelta,
    ToolCallAccumulator,
    ToolCallDelta,
    ToolCallRequest,
    ToolDefinition,
    Usage,
    complete,
)

HOURS = ToolDefinition(
    name="get_hours",
    description="Opening hours for a day.",
    parameters={"type": "object", "properties": {"day": {"type": "string"}}},
)


def message_start(input_tokens: int = 25) -> SSEEvent:
    return (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-test",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        },
    )


def block_start(index: int, block: dict[str, Any]) -> SSEEvent:
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def text_block(index: int) -> SSEEvent:
    return block_start(index, {"type": "text", "text": ""})


def tool_block(index: int, call_id: str, name: str) -> SSEEvent:
    return block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}})


def text_delta(index: int, text: str) -> SSEEvent:
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        },
    )


def json_delta(index: int, partial: str) -> SSEEvent:
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial},
        },
    )


def block_stop(index: int) -> SSEEvent:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_end(stop_reason: str = "end_turn", output_tokens: int = 15) -> list[SSEEvent]:
    return [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


PING: SSEEvent = ("ping", {"type": "ping"})


@pytest.fixture
async def server() -> AsyncIterator[ChatServer]:
    async with ChatServer() as running:
        yield running


@pytest.fixture
async def llm(server: ChatServer) -> AsyncIterator[AnthropicLLM]:
    model = AnthropicLLM(
        "claude-test", api_key="sk-ant-test", base_url=server.root_url, max_retries=0
    )
    yield model
    await model.aclose()


async def events_of(llm: AnthropicLLM, request: LLMRequest) -> list[LLMEvent]:
    return [event async for event in llm.stream(request)]


def ask(text: str = "Hi", **kwargs: Any) -> LLMRequest:
    return LLMRequest(messages=[ChatMessage(role="user", content=text)], **kwargs)


async def test_streams_text_and_usage(server: ChatServer, llm: AnthropicLLM) -> None:
    server.add(
        SSE(
            [
                message_start(input_tokens=30),
                text_block(0),
                PING,
                text_delta(0, "Hello"),
                text_delta(0, " there."),
                block_stop(0),
                *message_end(output_tokens=4),
            ]
        )
    )

    events = await events_of(llm, ask())

    assert events == [TextDelta("Hello"), TextDelta(" there."), Usage(30, 4)]
    request = server.requests[0]
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == "Bearer sk-ant-test"  # how this SDK sends keys
    assert request.body["model"] == "claude-test"
    assert request.body["max_tokens"] == 1024
    assert request.body["stream"] is True
    assert request.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}
    ]
    assert "system" not in request.body and "tools" not in request.body


async def test_tool_use_blocks_become_tool_calls_numbered_from_zero(
    server: ChatServer, llm: AnthropicLLM
) -> None:
    server.add(
        SSE(
            [
                message_start(),
                text_block(0),
                text_delta(0, "Let me check."),
                block_stop(0),
                tool_block(1, "toolu_01", "get_hours"),
                json_delta(1, ""),
                json_delta(1, '{"day": '),
                json_delta(1, '"mon"}'),
                block_stop(1),
                tool_block(2, "toolu_02", "get_hours"),
                json_delta(2, '{"day": "tue"}'),
                block_stop(2),
                *message_end(stop_reason="tool_use"),
            ]
        )
    )

    events = await events_of(llm, ask(tools=[HOURS]))

    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(index=0, id="toolu_01", name="get_hours"),
        ToolCallDelta(index=0, arguments='{"day": '),
        ToolCallDelta(index=0, arguments='"mon"}'),
        ToolCallDelta(index=1, id="toolu_02", name="get_hours"),
        ToolCallDelta(index=1, arguments='{"day": "tue"}'),
    ]
    calls = ToolCallAccumulator()
    for event in events:
        if isinstance(event, ToolCallDelta):
            calls.add(event)
    assert calls.calls() == [
        ToolCallRequest(id="toolu_01", name="get_hours", arguments='{"day": "mon"}'),
        ToolCallRequest(id="toolu_02", name="get_hours", arguments='{"day": "tue"}'),
    ]
    assert events[0] == TextDelta("Let me check.")
    assert events[-1] == Usage(25, 15)


def tool_use(call_id: str, arguments: dict[str, str]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": "get_hours", "input": arguments}


async def test_conversation_conversion(server: ChatServer, llm: AnthropicLLM) -> None:
    server.add(SSE([message_start(), text_block(0), text_delta(0, "ok"), *message_end()]))
    request = LLMRequest(
        messages=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hours for Monday and Tuesday?"),
            ChatMessage(
                role="assistant",
                content="Checking.",
                tool_calls=[
                    ToolCallRequest(id="toolu_01", name="get_hours", arguments='{"day": "mon"}'),
                    ToolCallRequest(id="toolu_02", name="get_hours", arguments='{"day": "tue"}'),
                ],
            ),
            ChatMessage(role="tool", tool_call_id="toolu_01", content="9-5"),
            ChatMessage(role="tool", tool_call_id="toolu_02", content="closed"),
            ChatMessage(role="system", content="Mention the holiday."),
            ChatMessage(role="user", content="Thanks"),
        ],
        tools=[HOURS],
        tool_choice="get_hours",
        max_tokens=200,
        options={"top_k": 3},
    )

    assert (await complete(llm, request)).text == "ok"

    body = server.requests[0].body
    assert body["system"] == "Be brief.\n\nMention the holiday."
    assert body["max_tokens"] == 200
    assert body["top_k"] == 3
    assert body["tools"] == [
        {
            "name": "get_hours",
            "description": "Opening hours for a day.",
            "input_schema": HOURS.parameters,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "get_hours"}
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hours for Monday and Tuesday?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_hours",
                    "input": {"day": "mon"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_02",
                    "name": "get_hours",
                    "input": {"day": "tue"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "9-5"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "closed"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
async def test_tool_choice_modes(
    server: ChatServer, llm: AnthropicLLM, choice: str, wire: dict[str, str]
) -> None:
    server.add(SSE([message_start(), *message_end()]))
    await complete(llm, ask(tools=[HOURS], tool_choice=choice))
    assert server.requests[0].body["tool_choice"] == wire


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (529, "overloaded_error", True),
        (500, "api_error", True),
        (429, "rate_limit_error", True),
        (400, "invalid_request_error", False),
        (401, "authentication_error", False),
        (404, "not_found_error", False),
    ],
)
async def test_http_errors_map_to_llm_error(
    server: ChatServer, llm: AnthropicLLM, status: int, error_type: str, retryable: bool
) -> None:
    server.add(
        JSONReply(
            {"type": "error", "error": {"type": error_type, "message": "nope\nreally"}},
            status=status,
        )
    )

    with pytest.raises(LLMError) as caught:
        await events_of(llm, ask())

    assert caught.value.retryable is retryable
    assert str(caught.value) == f"anthropic:claude-test: HTTP {status}: nope really"


@pytest.mark.parametrize(
    ("error_type", "retryable"), [("overloaded_error", True), ("invalid_request_error", False)]
)
async def test_error_event_inside_the_stream(
    server: ChatServer, llm: AnthropicLLM, error_type: str, retryable: bool
) -> None:
    server.add(
        SSE(
            [
                message_start(),
                text_block(0),
                text_delta(0, "Well"),
                ("error", {"type": "error", "error": {"type": error_type, "message": "gone"}}),
            ]
        )
    )

    seen: list[LLMEvent] = []
    with pytest.raises(LLMError, match=error_type) as caught:
        async for event in llm.stream(ask()):
            seen.append(event)

    assert seen == [TextDelta("Well")]
    assert caught.value.retryable is retryable


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = AnthropicLLM("c", api_key="k", base_url=f"http://127.0.0.1:{port}", max_retries=0)

    with pytest.raises(LLMError, match="cannot connect") as caught:
        await events_of(model, ask())

    assert caught.value.retryable is True
    await model.aclose()


def test_missing_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY") as caught:
        AnthropicLLM("claude-test", api_key=None)
    assert "\n" not in str(caught.value)
