"""Claude through the Messages API, speaking voxline's Chat-Completions-shaped protocol.

The Messages API differs in structure more than in substance: the system prompt is a parameter,
tool calls are `tool_use` content blocks, tool results travel as `tool_result` blocks inside a
user message, and roles must alternate. Converting at this edge keeps the rest of voxline on one
message model.

A reply is complete only at `message_stop`. A stream that ends before it (a connection closed
cleanly mid-answer) is a provider failure, so the session apologises or falls back instead of
treating half a reply as the answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import anthropic
from anthropic import types as wire

from voxline.providers.llm.base import (
    ChatMessage,
    LLMError,
    LLMEvent,
    LLMRequest,
    MissingKeyError,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
    ToolDefinition,
    Usage,
)
from voxline.providers.llm.openai_compat import one_line, retryable_status
from voxline.telemetry import counters

DEFAULT_MAX_TOKENS = 1024
# Error types Anthropic sends inside a stream (HTTP 200), where no status tells the story.
_RETRYABLE_TYPES = frozenset({"api_error", "overloaded_error", "rate_limit_error", "timeout_error"})


def to_anthropic_messages(
    messages: list[ChatMessage],
) -> tuple[str | None, list[wire.MessageParam]]:
    """Split out the system prompt and merge consecutive same-role turns, as the API requires."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    merged: list[tuple[str, list[wire.ContentBlockParam]]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, blocks))
    converted: list[wire.MessageParam] = [
        {"role": "assistant", "content": blocks}
        if role == "assistant"
        else {"role": "user", "content": blocks}
        for role, blocks in merged
    ]
    return system or None, converted


def _blocks(message: ChatMessage) -> list[wire.ContentBlockParam]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content or "",
            }
        ]
    blocks: list[wire.ContentBlockParam] = []
    if message.content:  # the API rejects empty text blocks
        blocks.append({"type": "text", "text": message.content})
    if message.role == "assistant":
        blocks.extend(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)}
            for call in message.tool_calls
        )
    return blocks


def _input(call: ToolCallRequest) -> dict[str, Any]:
    """The call's arguments as an object; a model's malformed JSON is replayed as empty."""
    try:
        return call.parsed_arguments()
    except ValueError:
        return {}


def to_anthropic_tools(tools: list[ToolDefinition]) -> list[wire.ToolParam]:
    return [
        {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
        for tool in tools
    ]


def to_anthropic_tool_choice(choice: str) -> wire.ToolChoiceParam:
    match choice:
        case "auto":
            return {"type": "auto"}
        case "required":
            return {"type": "any"}
        case "none":
            return {"type": "none"}
        case _:
            return {"type": "tool", "name": choice}


class _StreamState:
    """Numbers `tool_use` blocks 0, 1, 2… (their block indexes count text blocks too)."""

    def __init__(self) -> None:
        self.tool_index: dict[int, int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.saw_usage = False
        self.stopped = False  # `message_stop` arrived: the reply is whole

    def events(self, event: wire.RawMessageStreamEvent) -> list[LLMEvent]:
        if isinstance(event, wire.RawMessageStopEvent):
            self.stopped = True
        elif isinstance(event, wire.RawMessageStartEvent):
            usage = event.message.usage
            self.saw_usage = True
            self.prompt_tokens = (
                usage.input_tokens
                + (usage.cache_creation_input_tokens or 0)
                + (usage.cache_read_input_tokens or 0)
            )
            self.completion_tokens = usage.output_tokens
        elif isinstance(event, wire.RawMessageDeltaEvent):
            self.saw_usage = True
            self.completion_tokens = event.usage.output_tokens
        elif isinstance(event, wire.RawContentBlockStartEvent):
            block = event.content_block
            if isinstance(block, wire.ToolUseBlock):
                index = self.tool_index[event.index] = len(self.tool_index)
                return [ToolCallDelta(index=index, id=block.id, name=block.name)]
            if isinstance(block, wire.TextBlock) and block.text:
                return [TextDelta(block.text)]
        elif isinstance(event, wire.RawContentBlockDeltaEvent):
            delta = event.delta
            if isinstance(delta, wire.TextDelta) and delta.text:
                return [TextDelta(delta.text)]
            if isinstance(delta, wire.InputJSONDelta) and delta.partial_json:
                call_index = self.tool_index.get(event.index)
                if call_index is not None:
                    return [ToolCallDelta(index=call_index, arguments=delta.partial_json)]
        return []

    def usage(self) -> list[LLMEvent]:
        if not self.saw_usage:
            return []
        return [Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)]


class AnthropicLLM:
    """A Claude model, streamed. `max_tokens` is mandatory for this API, hence the default."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None = None,
        label: str | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_retries: int = 1,
    ) -> None:
        if not api_key:
            raise MissingKeyError(
                "anthropic: no API key; set ANTHROPIC_API_KEY or VOXLINE_ANTHROPIC_API_KEY"
            )
        self.model = model
        self.label = label or f"anthropic:{model}"
        self._default_max_tokens = default_max_tokens
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=anthropic.Timeout(timeout, connect=connect_timeout),
            max_retries=max_retries,
        )

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        counters.provider_request("llm", self.label)
        state = _StreamState()
        try:
            events = await self._create(request)
            async with events:
                async for event in events:
                    for converted in state.events(event):
                        yield converted
        except anthropic.AnthropicError as exc:
            raise self._error(exc) from exc
        except json.JSONDecodeError as exc:
            raise LLMError(
                f"{self.label}: malformed stream: {one_line(str(exc))}", provider=self.label
            ) from exc
        if not state.stopped:
            raise LLMError(
                f"{self.label}: the stream ended before the reply did (no message_stop)",
                provider=self.label,
            )
        for converted in state.usage():
            yield converted

    async def _create(
        self, request: LLMRequest
    ) -> anthropic.AsyncStream[wire.RawMessageStreamEvent]:
        # `temperature` is not sent: the installed SDK's Messages API no longer takes it (a
        # caller who needs it on an older endpoint can put it in `request.options`).
        system, messages = to_anthropic_messages(request.messages)
        tools = to_anthropic_tools(request.tools) if request.tools else anthropic.omit
        tool_choice = (
            to_anthropic_tool_choice(request.tool_choice)
            if request.tools and request.tool_choice
            else anthropic.omit
        )
        return await self._client.messages.create(
            model=self.model,
            messages=messages,
            max_tokens=request.max_tokens or self._default_max_tokens,
            stream=True,
            system=system if system is not None else anthropic.omit,
            tools=tools,
            tool_choice=tool_choice,
            extra_body=request.options or None,
        )

    def _error(self, exc: anthropic.AnthropicError) -> LLMError:
        counters.provider_failure("llm", self.label)
        if isinstance(exc, anthropic.APIConnectionError):
            detail = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "cannot connect"
            return LLMError(f"{self.label}: {detail}", provider=self.label)
        if isinstance(exc, anthropic.APIStatusError):
            message = one_line(exc.api_message or exc.message)
            if exc.status_code >= 400:
                return LLMError(
                    f"{self.label}: HTTP {exc.status_code}: {message}",
                    provider=self.label,
                    retryable=retryable_status(exc.status_code),
                )
            return LLMError(  # an `event: error` inside the stream
                f"{self.label}: stream error {exc.type or 'unknown'}: {message}",
                provider=self.label,
                retryable=exc.type in _RETRYABLE_TYPES,
            )
        return LLMError(f"{self.label}: {one_line(str(exc))}", provider=self.label, retryable=False)

    async def aclose(self) -> None:
        await self._client.close()
