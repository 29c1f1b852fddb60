"""The streaming LLM protocol every provider speaks, and the helpers around it.

A provider turns an `LLMRequest` into a stream of small events: text deltas, tool-call deltas
(already normalised: every fragment carries the index of the call it belongs to, whatever the
server sent) and usage. Consumers accumulate tool calls with `ToolCallAccumulator`, so "did the
model call a tool" is decided from the calls themselves, never from a finish reason.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCallRequest:
    """A complete tool call as the model asked for it; `arguments` is a JSON object string."""

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; raises ValueError with the model's text when it is not JSON."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments are not valid JSON: {self.arguments!r}") from exc
        if not isinstance(value, dict):
            raise ValueError(f"arguments must be a JSON object, got {self.arguments!r}")
        return value


@dataclass
class ChatMessage:
    role: Role
    content: str | None = None
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ToolDefinition:
    """What the model sees of a tool: its name, what it is for, and a JSON Schema of arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass
class LLMRequest:
    messages: list[ChatMessage]
    tools: list[ToolDefinition] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None
    tool_choice: str | None = None  # "auto" | "none" | "required" | a tool name
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific extras


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A fragment of tool call number `index`; the first fragment carries `id` and `name`.

    `withdrawn`: the provider named this call early (before its arguments) and then decided
    not to make it (the embedded model's checks on the arguments); the call is dropped, so a
    name without a complete call never runs."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    withdrawn: bool = False


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


LLMEvent = TextDelta | ToolCallDelta | Usage


class LLMError(Exception):
    """A provider failed; `retryable` says whether another provider might succeed."""

    def __init__(self, message: str, *, provider: str = "", retryable: bool = True) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable


class ConfigurationError(Exception):
    """A setting is missing or wrong; the message says how to fix it, on one line."""


class MissingKeyError(ConfigurationError):
    """A hosted provider's key is not set: a fallback list skips that provider (`openai:…,local`
    runs locally without a key), and `agents validate` warns rather than fails."""


@runtime_checkable
class LLM(Protocol):
    """A streaming chat model. `label` names it in logs and metrics (e.g. `openai:gpt-4.1-mini`)."""

    label: str

    def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Warmable(Protocol):
    """An LLM that can pre-evaluate a prompt prefix (local models): sessions call `warm` with
    their system prompt and tools at start so the first reply skips that cost."""

    async def warm(self, request: LLMRequest) -> None: ...


class ToolCallAccumulator:
    """Joins `ToolCallDelta` fragments into complete calls, in index order."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, delta: ToolCallDelta) -> None:
        if delta.withdrawn:
            self._calls.pop(delta.index, None)
            return
        call = self._calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
        if delta.id:
            call["id"] = delta.id
        if delta.name:
            call["name"] = call["name"] or delta.name
        call["arguments"] += delta.arguments

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[ToolCallRequest]:
        result = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call["name"]:
                continue
            result.append(
                ToolCallRequest(
                    id=call["id"] or f"call_{index}",
                    name=call["name"],
                    arguments=call["arguments"].strip() or "{}",
                )
            )
        return result


@dataclass
class Completion:
    text: str = ""
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


async def complete(llm: LLM, request: LLMRequest) -> Completion:
    """Run a request to the end and return everything at once (summaries, tests, SMS)."""
    parts: list[str] = []
    calls = ToolCallAccumulator()
    usage = Usage()
    async for event in llm.stream(request):
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, ToolCallDelta):
            calls.add(event)
        else:
            usage = event
    return Completion(text="".join(parts), tool_calls=calls.calls(), usage=usage)
