"""OpenAICompatibleLLM against a loopback server replaying real Chat Completions streams.

Each quirk scenario is a chunk sequence as the named servers send it (protocols.md §5); the
assertions are on what a consumer sees after `complete()`: the calls, their ids, their arguments.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from tests.providers.chat_server import (
    SSE,
    ChatServer,
    JSONReply,
    chunk,
    text_reply,
    usage_chunk,
)
from tests.providers.compat_requests import (
    HOURS,
    WEATHER,
    ask,
    call_delta,
    calls_of,
    events_of,
    tool_request,
)
from voxline.providers.llm.base import (
    ChatMessage,
    ConfigurationError,
    LLMError,
    LLMEvent,
    LLMRequest,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
    Usage,
    complete,
)
from voxline.providers.llm.openai_compat import OpenAICompatibleLLM

# --- text and request shape -------------------------------------------------------------------


async def test_streams_text_pieces_then_usage(server: ChatServer, llm: OpenAICompatibleLLM) -> None:
    server.add(text_reply("Hel", "lo", " there", usage=(12, 3)))

    events = await events_of(llm, ask("hi", temperature=0.2, max_tokens=50))

    assert events == [TextDelta("Hel"), TextDelta("lo"), TextDelta(" there"), Usage(12, 3)]
    body = server.requests[0].body
    assert server.requests[0].path == "/v1/chat/completions"
    assert body["model"] == "test-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 50
    assert "tools" not in body and "tool_choice" not in body


async def test_placeholder_key_for_a_local_server(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    server.add(text_reply("ok"))
    await complete(llm, ask())
    assert server.requests[0].headers["authorization"] == "Bearer not-needed"
    assert llm.label == "openai-compatible:test-model"


async def test_tools_tool_choice_and_options_reach_the_server(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    server.add(text_reply("ok"), text_reply("ok"))

    await complete(llm, tool_request(tool_choice="get_hours", options={"top_k": 5}))
    await complete(llm, tool_request(tool_choice="required"))

    first, second = (request.body for request in server.requests)
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_hours",
                "description": "Opening hours for a day.",
                "parameters": HOURS.parameters,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER.parameters,
            },
        },
    ]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "get_hours"}}
    assert first["top_k"] == 5
    assert second["tool_choice"] == "required"


async def test_official_host_label_and_url() -> None:
    model = OpenAICompatibleLLM("gpt-x", api_key="sk-test", max_retries=0)
    assert model.label == "openai:gpt-x"
    assert model.base_url == "https://api.openai.com/v1"
    await model.aclose()


def test_official_host_without_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY") as caught:
        OpenAICompatibleLLM("gpt-x")
    assert "\n" not in str(caught.value)


# --- tool-call streams ------------------------------------------------------------------------

CANONICAL = [  # verbatim from protocols.md §5
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"get_hours","arguments":""}}]},"logprobs":null,"finish_reason":null}]}',
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"day\\":"}}]},"logprobs":null,"finish_reason":null}]}',
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\"mon\\"}"}}]},"logprobs":null,"finish_reason":null}]}',
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}',
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":50,"completion_tokens":12,"total_tokens":62}}',
    "[DONE]",
]


async def test_canonical_tool_call_stream(server: ChatServer, llm: OpenAICompatibleLLM) -> None:
    server.add(SSE(CANONICAL))

    events = await events_of(llm, tool_request())

    assert events == [
        ToolCallDelta(index=0, id="call_abc", name="get_hours", arguments=""),
        ToolCallDelta(index=0, arguments='{"day":'),
        ToolCallDelta(index=0, arguments='"mon"}'),
        Usage(50, 12),
    ]


async def test_two_parallel_calls_interleaved(server: ChatServer, llm: OpenAICompatibleLLM) -> None:
    server.add(
        SSE(
            [
                chunk({"role": "assistant", "content": None}),
                chunk(
                    call_delta(
                        index=0,
                        id="call_a",
                        type="function",
                        function={"name": "get_hours", "arguments": ""},
                    )
                ),
                chunk(
                    call_delta(
                        index=1,
                        id="call_b",
                        type="function",
                        function={"name": "get_weather", "arguments": ""},
                    )
                ),
                chunk(call_delta(index=1, function={"arguments": '{"city":'})),
                chunk(call_delta(index=0, function={"arguments": '{"day":'})),
                chunk(call_delta(index=1, function={"arguments": '"Oslo"}'})),
                chunk(call_delta(index=0, function={"arguments": '"tue"}'})),
                chunk(finish_reason="tool_calls"),
                usage_chunk(),
                "[DONE]",
            ]
        )
    )

    result = await complete(llm, tool_request())

    assert result.tool_calls == [
        ToolCallRequest(id="call_a", name="get_hours", arguments='{"day":"tue"}'),
        ToolCallRequest(id="call_b", name="get_weather", arguments='{"city":"Oslo"}'),
    ]


async def test_missing_index_keys_calls_on_new_ids(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    """Older Ollama: no `index` at all; each call starts with its id, fragments follow."""
    server.add(
        SSE(
            [
                chunk(call_delta(id="call_1", function={"name": "get_hours", "arguments": ""})),
                chunk(call_delta(function={"arguments": '{"day": "wed"}'})),
                chunk(call_delta(id="call_2", function={"name": "get_weather", "arguments": "{"})),
                chunk(call_delta(function={"arguments": '"city": "Rome"}'})),
                chunk(finish_reason="tool_calls"),
                "[DONE]",
            ]
        )
    )

    events = await events_of(llm, tool_request())

    assert [e.index for e in events if isinstance(e, ToolCallDelta)] == [0, 0, 1, 1]
    assert calls_of(events) == [
        ToolCallRequest(id="call_1", name="get_hours", arguments='{"day": "wed"}'),
        ToolCallRequest(id="call_2", name="get_weather", arguments='{"city": "Rome"}'),
    ]


async def test_every_parallel_call_sent_as_index_zero(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    """LiteLLM in front of Ollama: both calls say `index: 0` but carry different ids."""
    server.add(
        SSE(
            [
                chunk(
                    call_delta(
                        index=0,
                        id="call_x1",
                        type="function",
                        function={"name": "get_hours", "arguments": '{"day": "thu"}'},
                    )
                ),
                chunk(
                    call_delta(
                        index=0,
                        id="call_x2",
                        type="function",
                        function={"name": "get_weather", "arguments": ""},
                    )
                ),
                chunk(call_delta(index=0, function={"arguments": '{"city": "Lima"}'})),
                chunk(finish_reason="tool_calls"),
                "[DONE]",
            ]
        )
    )

    result = await complete(llm, tool_request())

    assert result.tool_calls == [
        ToolCallRequest(id="call_x1", name="get_hours", arguments='{"day": "thu"}'),
        ToolCallRequest(id="call_x2", name="get_weather", arguments='{"city": "Lima"}'),
    ]


async def test_finish_reason_stop_with_tool_calls(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    """OpenAI itself does this for a forced `tool_choice`."""
    events = [e for e in CANONICAL if '"finish_reason":"tool_calls"' not in e]
    events.insert(3, json.dumps(chunk(finish_reason="stop", model="m")))
    server.add(SSE(events))

    result = await complete(llm, tool_request(tool_choice="get_hours"))

    assert result.tool_calls == [
        ToolCallRequest(id="call_abc", name="get_hours", arguments='{"day":"mon"}')
    ]


async def test_whole_call_in_one_chunk_with_object_arguments_and_bare_id(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    """Ollama-style: one chunk, `arguments` as a JSON object, an id without `call_`."""
    server.add(
        SSE(
            [
                chunk(
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "7f3a9c",
                                "type": "function",
                                "function": {"name": "get_hours", "arguments": {"day": "fri"}},
                            }
                        ],
                    },
                    finish_reason="stop",
                ),
                "[DONE]",
            ]
        )
    )

    events = await events_of(llm, tool_request())

    assert events == [
        ToolCallDelta(index=0, id="7f3a9c", name="get_hours", arguments='{"day": "fri"}')
    ]


async def test_a_different_chunk_id_on_every_chunk(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    server.add(
        SSE(
            [
                chunk({"role": "assistant", "content": "On "}, chunk_id="gen-1"),
                chunk({"content": "it."}, chunk_id="gen-2"),
                chunk(
                    call_delta(index=0, id="call_q", function={"name": "get_hours"}),
                    chunk_id="gen-3",
                ),
                chunk(call_delta(index=0, function={"arguments": "{}"}), chunk_id="gen-4"),
                chunk(finish_reason="tool_calls", chunk_id="gen-5"),
                "[DONE]",
            ]
        )
    )

    result = await complete(llm, tool_request())

    assert result.text == "On it."
    assert result.tool_calls == [ToolCallRequest(id="call_q", name="get_hours", arguments="{}")]


async def test_no_usage_when_the_server_never_sends_it(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    server.add(text_reply("plain", usage=None))
    assert await events_of(llm, ask()) == [TextDelta("plain")]


async def test_usage_on_the_last_content_chunk(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    """Some servers attach usage to the finishing chunk instead of an empty-choices one."""
    server.add(
        SSE(
            [
                chunk({"role": "assistant", "content": "Yes."}),
                chunk(
                    finish_reason="stop",
                    usage={"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
                ),
                "[DONE]",
            ]
        )
    )
    assert await events_of(llm, ask()) == [TextDelta("Yes."), Usage(7, 2)]


async def test_multi_turn_sends_assistant_tool_calls_and_tool_results(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    server.add(SSE(CANONICAL), text_reply("We open at nine on Monday."))
    history = [
        ChatMessage(role="system", content="You are a shop assistant."),
        ChatMessage(role="user", content="When do you open on Monday?"),
    ]

    first = await complete(llm, LLMRequest(messages=history, tools=[HOURS]))
    history.append(ChatMessage(role="assistant", content=None, tool_calls=first.tool_calls))
    history.append(ChatMessage(role="tool", tool_call_id="call_abc", content='{"open":"9-5"}'))
    second = await complete(llm, LLMRequest(messages=history, tools=[HOURS]))

    assert second.text == "We open at nine on Monday."
    assert server.requests[1].body["messages"] == [
        {"role": "system", "content": "You are a shop assistant."},
        {"role": "user", "content": "When do you open on Monday?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_hours", "arguments": '{"day":"mon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"open":"9-5"}'},
    ]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (400, False), (401, False), (404, False)],
)
async def test_http_errors_map_to_llm_error(
    server: ChatServer, llm: OpenAICompatibleLLM, status: int, retryable: bool
) -> None:
    server.add(
        JSONReply(
            {"error": {"message": "it broke\nbadly", "type": "server_error", "code": None}},
            status=status,
        )
    )

    with pytest.raises(LLMError) as caught:
        await events_of(llm, ask())

    assert caught.value.retryable is retryable
    assert caught.value.provider == "openai-compatible:test-model"
    assert str(caught.value) == f"openai-compatible:test-model: HTTP {status}: it broke badly"


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = OpenAICompatibleLLM("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)

    with pytest.raises(LLMError, match="cannot connect") as caught:
        await events_of(model, ask())

    assert caught.value.retryable is True
    await model.aclose()


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ({"message": "model overloaded", "type": "server_error"}, True),
        ({"message": "context too long", "type": "BadRequestError", "code": 400}, False),
    ],
)
async def test_error_object_inside_the_stream(
    server: ChatServer, llm: OpenAICompatibleLLM, error: dict[str, Any], retryable: bool
) -> None:
    server.add(SSE([chunk({"role": "assistant", "content": "Hi"}), {"error": error}, "[DONE]"]))

    seen: list[LLMEvent] = []
    with pytest.raises(LLMError, match=error["message"]) as caught:
        async for event in llm.stream(ask()):
            seen.append(event)

    assert seen == [TextDelta("Hi")]
    assert caught.value.retryable is retryable


async def test_connection_dropped_mid_stream(server: ChatServer, llm: OpenAICompatibleLLM) -> None:
    server.add(SSE([chunk({"role": "assistant", "content": "Half a sen"})], truncate=True))

    seen: list[LLMEvent] = []
    with pytest.raises(LLMError) as caught:
        async for event in llm.stream(ask()):
            seen.append(event)

    assert seen == [TextDelta("Half a sen")]
    assert caught.value.retryable is True


async def test_a_reply_closed_early_leaves_the_client_usable(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    server.add(text_reply("one", "two", "three"), text_reply("again"))
    stream = llm.stream(ask())
    assert await anext(stream) == TextDelta("one")
    await stream.aclose()  # a barge-in cancels the reply

    assert (await asyncio.wait_for(complete(llm, ask()), 10)).text == "again"


def test_server_on_a_thread_serves_synchronous_callers() -> None:
    with ChatServer([text_reply("from ", "a thread")]) as server:

        async def run() -> str:
            model = OpenAICompatibleLLM("m", base_url=server.base_url, max_retries=0)
            try:
                return (await complete(model, ask())).text
            finally:
                await model.aclose()

        assert asyncio.run(run()) == "from a thread"
    assert server.requests[0].body["model"] == "m"
