"""The text model a Realtime agent's `Session` holds: none, on purpose.

A session needs an LLM to exist (the server builds one per agent spec), but a Realtime model
is reached over its own socket by the voice engine, not through `LLM.stream`. So an
`openai-realtime:` spec makes this stand-in:

- On a channel with no Realtime engine (ConversationRelay, SMS, a text session) it refuses
  with one clear line, before any event, so a fallback chain moves on: an agent whose `llm`
  is `openai-realtime:gpt-realtime,openai:gpt-4.1-mini` speaks through the Realtime model on
  Media Streams and answers texts and ConversationRelay calls with the text model.
- Inside a Realtime call, where the session still runs `respond()` itself after a human decides
  an approval, the engine has bound its responder to the running context
  (`bind_responder`): the stand-in asks the engine for a response (a `response.create`) and
  yields nothing, so no second, text-made answer is written.

The binding travels the way asyncio contexts do: set inside the approval task (by the engine's
`approval_resolved` handler, which runs inline in that task), it is inherited by the reply task
that task spawns and by nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar

from voxline.providers.llm.base import LLMError, LLMEvent, LLMRequest

Responder = Callable[[], None]

_RESPONDER: ContextVar[Responder | None] = ContextVar("voxline_realtime_responder", default=None)

TEXT_REFUSED = (
    "{label} is a speech-to-speech model: it answers only on voice channels that run it "
    "(Twilio Media Streams). ConversationRelay, SMS and text sessions need a text model after "
    "it in the agent's llm, e.g. '{label},openai:gpt-4.1-mini'"
)


def bind_responder(responder: Responder) -> None:
    """Make `respond()` calls from the current context (and the tasks it starts) ask the
    Realtime engine for a response instead of a text model."""
    _RESPONDER.set(responder)


class RealtimeVoiceLLM:
    """The `LLM` an `openai-realtime:` spec builds for the session (see the module doc)."""

    def __init__(self, label: str) -> None:
        self.label = label

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        responder = _RESPONDER.get()
        if responder is None:
            raise LLMError(TEXT_REFUSED.format(label=self.label), provider=self.label)
        responder()
        return
        yield  # an async generator that yields nothing

    async def aclose(self) -> None:
        return None
