"""The embedded Qwen model for real: facts, a tool call, queueing and cancellation."""

import asyncio
import json

import pytest

from voxline.providers.llm.base import (
    ChatMessage,
    LLMRequest,
    TextDelta,
    ToolCallAccumulator,
    ToolCallDelta,
    ToolDefinition,
    complete,
)
from voxline.providers.llm.local import LocalLLM

pytestmark = pytest.mark.slow

SYSTEM = ChatMessage("system", "You are a friendly voice assistant. Keep answers short.")
WEATHER = ToolDefinition(
    name="get_weather",
    description="Get the weather forecast for a city on a given day.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "day": {"type": "string"}},
        "required": ["city", "day"],
    },
)


def ask(question: str, tools: list[ToolDefinition] | None = None) -> LLMRequest:
    return LLMRequest([SYSTEM, ChatMessage("user", question)], tools=tools or [])


async def test_answers_a_fact_in_plain_text(llm: LocalLLM) -> None:
    result = await complete(llm, ask("What is the capital of France?"))
    assert "paris" in result.text.lower()
    assert result.tool_calls == []
    assert result.usage.completion_tokens > 0


async def test_calls_the_weather_tool_and_shows_no_json(llm: LocalLLM) -> None:
    await llm.warm(ask("", [WEATHER]))
    events = [e async for e in llm.stream(ask("What's the weather in Paris tomorrow?", [WEATHER]))]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    # The name comes first, on its own (a voice channel can say a filler), then the arguments.
    assert [(d.name, d.arguments) for d in deltas[:1]] == [("get_weather", "")]
    accumulated = ToolCallAccumulator()
    for delta in deltas:
        accumulated.add(delta)
    [call] = accumulated.calls()
    assert call.name == "get_weather" and json.loads(call.arguments)["city"].lower() == "paris"
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "{" not in text and "get_weather" not in text


async def test_fact_with_a_tool_available_is_answered_without_the_tool(llm: LocalLLM) -> None:
    result = await complete(llm, ask("What is the capital of France?", [WEATHER]))
    assert result.tool_calls == []
    assert "paris" in result.text.lower() and "{" not in result.text


@pytest.mark.parametrize("said", ["Hello, how are you?", "I live on Main Street."])
async def test_small_talk_with_tools_offered_calls_nothing(llm: LocalLLM, said: str) -> None:
    result = await complete(llm, ask(said, [WEATHER]))
    assert result.tool_calls == []
    assert result.text.strip() and "{" not in result.text and "<" not in result.text


async def test_after_a_tool_result_it_speaks_the_result(llm: LocalLLM) -> None:
    request = ask("What's the weather in Paris tomorrow?", [WEATHER])
    first = await complete(llm, request)
    assert first.tool_calls
    request.messages += [
        ChatMessage("assistant", tool_calls=first.tool_calls),
        ChatMessage(
            "tool",
            '{"forecast": "light rain", "high_c": 14}',
            tool_call_id=first.tool_calls[0].id,
            name="get_weather",
        ),
    ]
    second = await complete(llm, request)
    assert second.tool_calls == []
    assert "rain" in second.text.lower() and "{" not in second.text


async def test_a_second_concurrent_request_waits_its_turn(llm: LocalLLM) -> None:
    results = await asyncio.gather(
        complete(llm, ask("Name one primary colour. One word.")),
        complete(llm, ask("What is the capital of France? One word.")),
    )
    assert all(result.text.strip() for result in results)
    assert "paris" in results[1].text.lower()


async def test_cancelling_a_reply_frees_the_model_for_the_next(llm: LocalLLM) -> None:
    request = ask("Write a long story about a dragon.")
    request.max_tokens = 400
    received: list[str] = []
    started = asyncio.Event()

    async def consume() -> None:
        async for event in llm.stream(request):
            if isinstance(event, TextDelta):
                received.append(event.text)
                if len(received) == 3:
                    started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = await complete(llm, ask("What is the capital of France? One word."))
    assert "paris" in result.text.lower()
    assert len(received) < 400
