"""A short spoken acknowledgement ("One moment.") while a tool call is written and run.

On a voice call a reply that calls a tool is silent from the caller's last word until the
second model step speaks: the model writes the call, the tool runs, the model writes the
answer (12 s with the embedded model on two cores). A caller who hears nothing for that long
thinks the line dropped, so the moment the model names a tool, before its arguments are
written, the agent says a configured phrase, as a human on the phone would.

The filler is ordinary speech said by `ReplyEngine.say`: the output guardrails rewrite it
like any fixed text, it is a complete bot turn of the reply (so the speaker speaks it, a
barge-in stops it and trims it to what was heard, and a text channel would send it), and it
is stored where it was said, before the call. The model's next request therefore shows it as
the content of the assistant message that makes the call, the shape hosted models produce
themselves when they speak before calling; for the embedded model the prompt of the step
before stays an exact prefix (only the tokens of the call it wrote are read again, behind
the filler's few words), so llama.cpp's cached prefix stays valid.

It is said at most once per reply, and only when nothing was said yet: the engine asks for it
only while the reply is silent, and once it is said the reply is no longer silent, so the later
steps of the same reply (a second call, the wrap-up) never repeat it. Text channels (SMS, the
text API, the terminal) never get one: a reader sees the answer when it is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from voxline.conversation.state import SessionState

if TYPE_CHECKING:
    from voxline.conversation.engine import Delivery, ReplyEngine

DEFAULT_PHRASE = "One moment."
CALL_CONTROL_TOOLS = frozenset(
    {"end_call", "switch_language", "send_digits", "play_sound", "transfer_to_human"}
)
"""The channels' own call-control tools (`voxline.channels.relay_tools`, `media_tools`): they act
on the call at once (hang up, switch the voice, press keys, play a sound, hand over), so there
is no wait to fill, and "One moment." before a goodbye or a language switch sounds wrong; they
are silent unless `tools` names them."""
SPOKEN_CHANNELS = frozenset({"voice", "web", "phone"})
"""Channels whose text is heard, whatever their delivery (ConversationRelay delivers text at
once and Twilio speaks it); any channel that delivers only what was played is spoken too."""
PROTOCOL_CHANNELS = frozenset({"realtime"})
"""Channels that serve a speech API (voxline's OpenAI Realtime endpoint): the client owns the
response's shape (an extra message item before each function call would change what its SDK
sees) and decides what its own caller hears, so no filler is added there."""
_QUIET = frozenset({SessionState.THINKING, SessionState.CALLING_TOOLS})
# A result or words of the reply (or its end) make a delayed filler pointless.
_CANCELLED_BY = ("bot_text_delta", "tool_finished", "interrupted", "reply_finished")

Phrase = Annotated[str, Field(max_length=200)]
ToolKey = Annotated[str, Field(min_length=1, max_length=64)]


class ToolFillerSettings(BaseModel):
    """What a voice agent says while a tool call runs (`turn.tool_filler`).

    `delay` is 0 by default, on purpose: the filler's job is to end the silence, and with the
    embedded model the silence after a call is named lasts seconds (the arguments, the tool,
    a second model step), so any wait is silence the caller hears. A positive delay is for
    fast stacks (a hosted model, tools that answer in a few hundred ms), where the answer often
    starts within a second: the filler is then said only if, after `delay` seconds, no tool
    result has come in and the reply has said nothing, because a filler said just before the
    answer only postpones it (the answer's audio queues behind the filler's)."""

    model_config = ConfigDict(extra="forbid")

    phrase: Phrase = Field(
        DEFAULT_PHRASE,
        description="Said on voice channels as soon as the model chooses a tool, when the "
        "reply has said nothing yet (once per reply; never on SMS or text). Write it in the "
        "agent's language. Empty: no filler, except for the tools listed in `tools`.",
    )
    tools: dict[ToolKey, Phrase] = Field(
        default_factory=dict,
        description="Per-tool phrases that replace `phrase`, by tool name, e.g. "
        '{"get_weather": "Let me check the weather."}; an empty phrase keeps that tool silent. '
        "The call-control tools (end_call, transfer_to_human, switch_language, send_digits, "
        "play_sound) act at once and are silent unless named here.",
    )
    delay: float = Field(
        0.0,
        ge=0,
        le=10,
        description="Seconds to wait after the tool is chosen; the filler is then said only if "
        "no tool result has come in and nothing was said. 0: at once (best when tool turns "
        "take seconds, as with the embedded model).",
    )

    def phrase_for(self, tool: str) -> str:
        """The phrase for a call of `tool` ('' for none)."""
        default = "" if tool in CALL_CONTROL_TOOLS else self.phrase
        return self.tools.get(tool, default).strip()

    @property
    def enabled(self) -> bool:
        return any(phrase.strip() for phrase in (self.phrase, *self.tools.values()))


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Cancellable]


def _call_later(delay: float, callback: Callable[[], None]) -> Cancellable:
    return asyncio.get_running_loop().call_later(delay, callback)


class ToolFiller:
    """One reply's filler (a `ReplyPlan` holds it; a new reply gets a new one). The engine calls
    `chosen` at each named tool-call delta while its reply has said nothing.

    A delayed filler is a loop timer, not a task: nothing to await, and anything that makes it
    pointless (words of the reply, a tool result, an interruption, the reply's end) cancels it.
    `schedule` replaces the loop's `call_later` (tests fire it by hand)."""

    def __init__(self, settings: ToolFillerSettings, *, schedule: Schedule = _call_later) -> None:
        self.settings = settings
        self._schedule = schedule
        self._asked = False  # said, or waiting to be said, in this reply
        self._timer: Cancellable | None = None
        self._off: list[Callable[[], None]] = []

    @classmethod
    def for_channel(
        cls, settings: ToolFillerSettings, channel: str, delivery: Delivery
    ) -> ToolFiller | None:
        """A filler for a reply on `channel`; None where the reply is read, not heard, or the
        agent turned fillers off."""
        heard = channel in SPOKEN_CHANNELS or not delivery.auto
        if not heard or channel in PROTOCOL_CHANNELS or not settings.enabled:
            return None
        return cls(settings)

    def chosen(self, engine: ReplyEngine, tool: str) -> None:
        """The model named `tool` and the reply has said nothing: say the phrase (now, or after
        the delay if the reply is still silent and waiting then)."""
        phrase = self.settings.phrase_for(tool)
        if self._asked or not phrase:
            return  # a silent tool leaves the filler to a later call of the reply
        self._asked = True
        if self.settings.delay <= 0:
            engine.say(phrase)
            return
        self._off = [engine.bus.on(name, self._cancel) for name in _CANCELLED_BY]
        self._timer = self._schedule(self.settings.delay, lambda: self._fire(engine, phrase))

    def _fire(self, engine: ReplyEngine, phrase: str) -> None:
        if self._timer is None:
            return  # cancelled after the loop had already picked it to run
        self._timer = None
        self._detach()
        if engine.state.state in _QUIET:  # the reply is still making its answer
            engine.say(phrase)

    def _cancel(self, **_: Any) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._detach()

    def _detach(self) -> None:
        off, self._off = self._off, []
        for unsubscribe in off:
            unsubscribe()
