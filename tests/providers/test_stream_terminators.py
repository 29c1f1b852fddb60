"""A streamed reply is whole only when the provider says it ended: a Chat Completions chunk
with a `finish_reason` (then `data: [DONE]`), or Anthropic's `message_stop`. A body that closes
cleanly before that is a provider failure (`LLMError`, retryable), so the session apologises or
falls back instead of speaking half a sentence as the answer.

The servers are the loopback `ChatServer`, driven through the official SDKs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.providers.chat_server import SSE, ChatServer, SSEEvent, chunk, text_reply, usage_chunk
from tests.providers.test_anthropic import message_end, message_start, text_block, text_delta
from voxline.providers.llm.anthropic import AnthropicLLM
from voxline.providers.llm.base import (
    ChatMessage,
    LLMError,
    LLMEvent,
    LLMRequest,
    TextDelta,
    Usage,
    complete,
)
from voxline.providers.llm.fallback import FallbackLLM
from voxline.providers.llm.openai_compat import OpenAICompatibleLLM


def ask(text: str = "When are you open?") -> LLMRequest:
    return LLMRequest(messages=[ChatMessage(role="user", content=text)])


async def stream_until_error(
    llm: OpenAICompatibleLLM | AnthropicLLM,
) -> tuple[list[LLMEvent], LLMError]:
    seen: list[LLMEvent] = []
    with pytest.raises(LLMError) as caught:
        async for event in llm.stream(ask()):
            seen.append(event)
    return seen, caught.value


@pytest.fixture
async def server() -> AsyncIterator[ChatServer]:
    async with ChatServer() as running:
        yield running


@pytest.fixture
async def openai_llm(server: ChatServer) -> AsyncIterator[OpenAICompatibleLLM]:
    model = OpenAICompatibleLLM("test-model", base_url=server.base_url, max_retries=0)
    yield model
    await model.aclose()


@pytest.fixture
async def claude(server: ChatServer) -> AsyncIterator[AnthropicLLM]:
    model = AnthropicLLM(
        "claude-test", api_key="sk-ant-test", base_url=server.root_url, max_retries=0
    )
    yield model
    await model.aclose()


# -- Chat Completions ------------------------------------------------------------------------
async def test_a_chat_stream_closed_cleanly_mid_reply_is_a_failure(
    server: ChatServer, openai_llm: OpenAICompatibleLLM
) -> None:
    """No finish_reason, no [DONE], but a proper end of the HTTP body: not a short answer."""
    server.add(SSE([chunk({"role": "assistant", "content": ""}), chunk({"content": "We open at"})]))

    seen, error = await stream_until_error(openai_llm)

    assert seen == [TextDelta("We open at")]
    assert "ended before the reply did" in str(error)
    assert error.retryable is True
    assert error.provider == openai_llm.label


async def test_a_chat_stream_cut_inside_a_tool_call_is_a_failure(
    server: ChatServer, openai_llm: OpenAICompatibleLLM
) -> None:
    """Half a tool call's arguments must never reach the tool as if they were complete."""
    fragment = {"index": 0, "id": "call_1", "type": "function"}
    server.add(
        SSE(
            [
                chunk(
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {**fragment, "function": {"name": "get_hours", "arguments": '{"da'}}
                        ],
                    }
                ),
            ]
        )
    )

    with pytest.raises(LLMError, match="ended before the reply did"):
        await complete(openai_llm, ask())


async def test_a_chat_stream_with_its_finish_reason_but_no_done_is_whole(
    server: ChatServer, openai_llm: OpenAICompatibleLLM
) -> None:
    """The SDK consumes `[DONE]` itself; the finish_reason chunk is what it lets us see. One
    that arrived means the model finished, whatever happened to the line after it."""
    server.add(
        SSE(
            [
                chunk({"role": "assistant", "content": "Nine to five."}),
                chunk(finish_reason="stop"),
                usage_chunk(),
            ]
        )
    )

    result = await complete(openai_llm, ask())

    assert result.text == "Nine to five."


async def test_an_empty_chat_stream_is_a_failure_a_fallback_recovers_from(
    server: ChatServer,
) -> None:
    """A server that said nothing and hung up: the next provider answers instead."""
    server.add(SSE([chunk({"role": "assistant", "content": ""})]), text_reply("We open at nine."))
    first = OpenAICompatibleLLM("first", base_url=server.base_url, max_retries=0)
    second = OpenAICompatibleLLM("second", base_url=server.base_url, max_retries=0)
    try:
        result = await complete(FallbackLLM([first, second]), ask())
    finally:
        await first.aclose()
        await second.aclose()

    assert result.text == "We open at nine."
    assert [r.body["model"] for r in server.requests] == ["first", "second"]


async def test_a_complete_chat_stream_still_passes(
    server: ChatServer, openai_llm: OpenAICompatibleLLM
) -> None:
    server.add(text_reply("Open", " at nine."))

    events = [event async for event in openai_llm.stream(ask())]

    assert isinstance(events[-1], Usage)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Open at nine."


# -- Anthropic -------------------------------------------------------------------------------
async def test_an_anthropic_stream_without_message_stop_is_a_failure(
    server: ChatServer, claude: AnthropicLLM
) -> None:
    server.add(SSE([message_start(), text_block(0), text_delta(0, "We open")]))

    seen, error = await stream_until_error(claude)

    assert seen == [TextDelta("We open")]
    assert "no message_stop" in str(error)
    assert error.retryable is True


async def test_an_anthropic_stream_cut_after_message_delta_is_a_failure(
    server: ChatServer, claude: AnthropicLLM
) -> None:
    """Even the stop reason is not the end: only `message_stop` is."""
    [delta, _stop] = message_end()
    events: list[SSEEvent] = [message_start(), text_block(0), text_delta(0, "Done."), delta]
    server.add(SSE(events))

    with pytest.raises(LLMError, match="no message_stop"):
        await complete(claude, ask())


async def test_a_complete_anthropic_stream_still_passes(
    server: ChatServer, claude: AnthropicLLM
) -> None:
    server.add(SSE([message_start(), text_block(0), text_delta(0, "Nine."), *message_end()]))

    result = await complete(claude, ask())

    assert result.text == "Nine."
