"""A scripted LLM for tests and demos: exact tokens, tool calls, timing and failures.

Each request consumes the next `FakeReply` of the script (or asks a responder function), so a
test states the whole conversation up front and then asserts on `requests` to see what the model
was shown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from voxline.providers.llm.base import (
    LLMError,
    LLMEvent,
    LLMRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
)


@dataclass
class FakeToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass
class FakeReply:
    """One scripted answer.

    `text` is streamed as the given chunks (a string is split on spaces, keeping them).
    `fail_before` raises before the first event (a provider outage); `fail_after` raises after
    that many events (a connection dropped mid-stream).
    """

    text: str | list[str] = ""
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    ttft: float = 0.0
    token_delay: float = 0.0
    fail_before: Exception | None = None
    fail_after: int | None = None

    def chunks(self) -> list[str]:
        if isinstance(self.text, list):
            return self.text
        words = self.text.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words) if w or i == 0]


Responder = Callable[[LLMRequest], FakeReply]


class FakeLLM:
    """Streams scripted replies. `requests` records every request for assertions."""

    def __init__(
        self,
        script: Iterable[FakeReply | str] | Responder = (),
        *,
        label: str = "fake",
        default: FakeReply | None = None,
    ) -> None:
        self.label = label
        self.requests: list[LLMRequest] = []
        self._responder: Responder | None = script if callable(script) else None
        self._script: list[FakeReply] = (
            []
            if callable(script)
            else [FakeReply(text=s) if isinstance(s, str) else s for s in script]
        )
        self._default = default

    def _next(self, request: LLMRequest) -> FakeReply:
        if self._responder is not None:
            return self._responder(request)
        if self._script:
            return self._script.pop(0)
        if self._default is not None:
            return self._default
        raise LLMError("fake LLM script is exhausted", provider=self.label, retryable=False)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        self.requests.append(request)
        reply = self._next(request)
        if reply.ttft:
            await asyncio.sleep(reply.ttft)
        if reply.fail_before is not None:
            raise reply.fail_before
        events: list[LLMEvent] = [TextDelta(c) for c in reply.chunks() if c]
        for index, call in enumerate(reply.tool_calls):
            events.append(
                ToolCallDelta(
                    index=index,
                    id=call.id or f"call_fake_{len(self.requests)}_{index}",
                    name=call.name,
                    arguments=json.dumps(call.arguments),
                )
            )
        events.append(Usage(prompt_tokens=_rough_tokens(request), completion_tokens=len(events)))
        for count, event in enumerate(events):
            if reply.fail_after is not None and count >= reply.fail_after:
                raise LLMError("fake LLM stream dropped", provider=self.label)
            if count and reply.token_delay:
                await asyncio.sleep(reply.token_delay)
            yield event

    async def aclose(self) -> None:
        return None


def _rough_tokens(request: LLMRequest) -> int:
    return sum(len(m.content or "") for m in request.messages) // 4
