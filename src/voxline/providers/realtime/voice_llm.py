"""The text model a Realtime agent's `Session` holds: none, on purpose.

A session needs an LLM to exist (the server builds one per agent spec), but a Realtime model
is reached over its own socket by the voice engine, not through `LLM.stream`. So an
`openai-realtime:` spec makes this stand-in, which refuses with one clear line before any
event, so a fallback chain moves on: an agent whose `llm` is
`openai-realtime:gpt-realtime,openai:gpt-4.1-mini` speaks through the Realtime model on Media
Streams, in the browser, `voxline talk` and `voxline simulate`, and answers texts and
ConversationRelay calls with the text model. Inside a Realtime
call the session never reaches it: the engine answers for the session (`Session.set_responder`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from voxline.providers.llm.base import LLMError, LLMEvent, LLMRequest

TEXT_REFUSED = (
    "{label} is a speech-to-speech model: it answers only on voice channels that run it "
    "(Twilio Media Streams, the browser, voxline talk and simulate). ConversationRelay, SMS and "
    "text sessions need a text model after it in the agent's llm, e.g. "
    "'{label},openai:gpt-4.1-mini'"
)


class RealtimeVoiceLLM:
    """The `LLM` an `openai-realtime:` spec builds for the session (see the module doc)."""

    def __init__(self, label: str) -> None:
        self.label = label

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        raise LLMError(TEXT_REFUSED.format(label=self.label), provider=self.label)
        yield  # an async generator, as the protocol says

    async def aclose(self) -> None:
        return None
