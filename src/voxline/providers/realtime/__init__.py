"""Speech-to-speech models over OpenAI's Realtime WebSocket API (GA; beta event names read).

`registry` turns an agent's `openai-realtime:` spec into a `RealtimeClient` (and registers the
prefix with the LLM registry, see `voice_llm`); `config` is the `session.update` made from the
agent; `events` the wire format; `history` the turn store as conversation items;
`voxline.voice.realtime` runs a live session on it and `twilio` puts it on a Media Stream.
"""

from voxline.providers.realtime.registry import (
    REALTIME_PREFIX,
    RealtimeTarget,
    create_realtime,
    is_realtime_spec,
    realtime_part,
)

__all__ = [
    "REALTIME_PREFIX",
    "RealtimeTarget",
    "create_realtime",
    "is_realtime_spec",
    "realtime_part",
]
