"""Requests, tools and event helpers shared by the OpenAI-compatible client's tests."""

from __future__ import annotations

from typing import Any

from voxline.providers.llm.base import (
    ChatMessage,
    LLMEvent,
    LLMRequest,
    ToolCallAccumulator,
    ToolCallDelta,
    ToolCallRequest,
    ToolDefinition,
)
from voxline.providers.llm.openai_compat import OpenAICompatibleLLM

HOURS = ToolDefinition(
    name="get_hours",
    description="Opening hours for a day.",
    parameters={"type": "object", "properties": {"day": {"type": "string"}}},
)
WEATHER = ToolDefinition(
    name="get_weather",
    description="The weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


def ask(text: str = "When are you open?", **kwargs: Any) -> LLMRequest:
    return LLMRequest(messages=[ChatMessage(role="user", content=text)], **kwargs)


def tool_request(**kwargs: Any) -> LLMRequest:
    return ask(tools=[HOURS, WEATHER], **kwargs)


def call_delta(**fields: Any) -> dict[str, Any]:
    return {"tool_calls": [fields]}


def calls_of(events: list[LLMEvent]) -> list[ToolCallRequest]:
    calls = ToolCallAccumulator()
    for event in events:
        if isinstance(event, ToolCallDelta):
            calls.add(event)
    return calls.calls()


async def events_of(llm: OpenAICompatibleLLM, request: LLMRequest) -> list[LLMEvent]:
    return [event async for event in llm.stream(request)]
