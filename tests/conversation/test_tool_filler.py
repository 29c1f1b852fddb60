"""The spoken filler ("One moment.") said when the model chooses a tool on a voice channel:
once per reply, before the call runs, recorded where it was said; never on text channels; per
tool, off, delayed; and a named call that never completes or is cut off by the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from voxline import Agent, Session, tool
from voxline.conversation.engine import Delivery, ReplyEngine, ReplyPlan
from voxline.conversation.filler import ToolFiller, ToolFillerSettings
from voxline.conversation.turns import BotTurn, ToolCallTurn, ToolResultTurn
from voxline.providers.llm.base import (
    LLMError,
    LLMEvent,
    LLMRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.providers.llm.local_tools import render_prompt
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.tools.base import Tool

from .order_tools import order_tools, reply_engine

FILLER = "One moment."
ANSWER = "It is sunny in Paris."


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city.

    Args:
        city: The city.
    """
    return f"{city}: sunny, 22 degrees"


def weather_model() -> FakeLLM:
    """Calls the weather tool, then speaks its result."""
    return FakeLLM([FakeReply(tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})]), ANSWER])


@dataclass
class Heard:
    """What a channel saw of a session, in order: what each bot turn said (its deltas joined)
    and tool runs."""

    events: list[tuple[str, str]] = field(default_factory=list)
    _turn: str | None = None

    def watch(self, session: Session) -> None:
        session.on("bot_text_delta", self._delta)
        session.on("tool_started", lambda call, turn: self._add("tool", call.name))
        session.on("tool_finished", lambda call, outcome, turn: self._add("result", call.name))

    def _delta(self, turn: BotTurn, delta: str) -> None:
        if self._turn == turn.id:
            self.events[-1] = ("say", self.events[-1][1] + delta)
        else:
            self._add("say", delta)
            self._turn = turn.id

    def _add(self, kind: str, text: str) -> None:
        self.events.append((kind, text))
        self._turn = None

    def said(self) -> list[str]:
        return [text for kind, text in self.events if kind == "say"]


async def run_session(
    store: Store,
    settings: Settings,
    llm: Any,
    *,
    channel: str = "voice",
    turn: dict[str, Any] | None = None,
    tools: Sequence[Tool] = (get_weather,),
    asks: Sequence[str] = ("What's the weather in Paris?",),
) -> tuple[Session, Heard, list[str]]:
    agent = Agent(name="filler", tools=list(tools), turn=turn or {})  # type: ignore[arg-type]
    session = Session(agent, llm=llm, store=store, settings=settings, channel=channel)
    heard = Heard()
    async with session:
        heard.watch(session)
        replies = [await session.send_text(text) for text in asks]
    return session, heard, replies


def bots(session: Session) -> list[BotTurn]:
    return [t for t in session.turns if isinstance(t, BotTurn)]


# -- voice and text channels -----------------------------------------------------------------
async def test_a_voice_reply_says_the_filler_once_before_the_tool_runs(
    store: Store, settings: Settings
) -> None:
    llm = weather_model()
    session, heard, [reply] = await run_session(store, settings, llm)
    assert heard.events == [
        ("say", FILLER),
        ("tool", "get_weather"),
        ("result", "get_weather"),
        ("say", " " + ANSWER),  # joined to the filler like any speech of the reply
    ]
    assert reply == ANSWER  # the answer is still the reply's last turn
    filler, answer = bots(session)
    assert filler.content == FILLER and filler.complete and not filler.interrupted
    assert answer.content == ANSWER
    kinds = [type(t).__name__ for t in session.turns]
    assert kinds == ["UserTurn", "BotTurn", "ToolCallTurn", "ToolResultTurn", "BotTurn"]
    # The model's next request shows the filler where it was said: the content of the
    # assistant message that makes the call.
    second = llm.requests[1]
    [calling] = [m for m in second.messages if m.role == "assistant"]
    assert calling.content == FILLER and [c.name for c in calling.tool_calls] == ["get_weather"]
    # The embedded model's prompt of the first step is an exact prefix of the second's, so
    # its cached prefix stays valid.
    first_prompt = render_prompt(llm.requests[0].messages, llm.requests[0].tools)
    second_prompt = render_prompt(second.messages, second.tools)
    assert second_prompt.startswith(first_prompt)
    assert FILLER in second_prompt[len(first_prompt) :]


@pytest.mark.parametrize("channel", ["text", "sms", "terminal"])
async def test_a_text_channel_gets_no_filler(
    store: Store, settings: Settings, channel: str
) -> None:
    session, heard, [reply] = await run_session(store, settings, weather_model(), channel=channel)
    assert heard.said() == [ANSWER] and reply == ANSWER
    assert [b.content for b in bots(session)] == [ANSWER]


async def test_a_voice_session_delivering_only_what_played_is_spoken_whatever_its_name(
    store: Store, settings: Settings
) -> None:
    agent = Agent(name="filler", tools=[get_weather])  # type: ignore[list-item]
    llm = weather_model()
    session = Session(
        agent, llm=llm, store=store, settings=settings, channel="simulate", auto_deliver=False
    )
    heard = Heard()
    async with session:
        heard.watch(session)
        await session.send_text("What's the weather in Paris?")
    assert heard.said() == [FILLER, " " + ANSWER]


async def test_an_empty_phrase_turns_the_filler_off(store: Store, settings: Settings) -> None:
    turn = {"tool_filler": {"phrase": ""}}
    session, heard, _ = await run_session(store, settings, weather_model(), turn=turn)
    assert heard.said() == [ANSWER]
    assert [b.content for b in bots(session)] == [ANSWER]


async def test_a_tool_can_have_its_own_phrase_or_none(store: Store, settings: Settings) -> None:
    turn = {"tool_filler": {"tools": {"get_weather": "Let me check the weather."}}}
    _, heard, _ = await run_session(store, settings, weather_model(), turn=turn)
    assert heard.said() == ["Let me check the weather.", " " + ANSWER]

    turn = {"tool_filler": {"phrase": "", "tools": {"get_weather": "Checking."}}}
    _, heard, _ = await run_session(store, settings, weather_model(), turn=turn)
    assert heard.said() == ["Checking.", " " + ANSWER]  # only the tool named has one

    turn = {"tool_filler": {"tools": {"get_weather": ""}}}
    _, heard, _ = await run_session(store, settings, weather_model(), turn=turn)
    assert heard.said() == [ANSWER]


def test_which_channels_hear_a_filler() -> None:
    settings = ToolFillerSettings()
    for channel in ("voice", "web", "phone"):  # ConversationRelay delivers text at once
        assert ToolFiller.for_channel(settings, channel, Delivery(auto=True)) is not None
    assert ToolFiller.for_channel(settings, "simulate", Delivery(auto=False)) is not None
    for channel in ("text", "sms", "terminal", "simulate"):
        assert ToolFiller.for_channel(settings, channel, Delivery(auto=True)) is None
    # voxline's Realtime endpoint: its client owns the response items and its own filler
    assert ToolFiller.for_channel(settings, "realtime", Delivery(auto=False)) is None
    off = ToolFillerSettings(phrase="")
    assert ToolFiller.for_channel(off, "voice", Delivery(auto=False)) is None


def test_call_control_tools_are_silent_unless_named() -> None:
    settings = ToolFillerSettings()
    assert settings.phrase_for("end_call") == "" and settings.phrase_for("lookup") == FILLER
    named = ToolFillerSettings(tools={"transfer_to_human": "Connecting you now."})
    assert named.phrase_for("transfer_to_human") == "Connecting you now."


def test_the_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="phrase"):
        ToolFillerSettings.model_validate({"phrase": "x" * 201})
    with pytest.raises(ValueError, match="delay"):
        ToolFillerSettings.model_validate({"delay": -1})
    with pytest.raises(ValueError, match="extra"):
        ToolFillerSettings.model_validate({"phrases": ["One moment."]})


# -- once per reply ----------------------------------------------------------------------------
async def test_several_tool_steps_say_the_filler_once_and_the_next_reply_again(
    store: Store, settings: Settings
) -> None:
    log: list[str] = []
    llm = FakeLLM(
        [
            FakeReply(tool_calls=[FakeToolCall("lookup_order", {"order_id": "A17"})]),
            FakeReply(tool_calls=[FakeToolCall("refund_order", {"order_id": "A17"})]),
            "Your refund of $42.50 is on its way.",
            FakeReply(tool_calls=[FakeToolCall("lookup_order", {"order_id": "B2"})]),
            "B2 was delivered.",
        ]
    )
    _, heard, replies = await run_session(
        store,
        settings,
        llm,
        tools=order_tools(log),
        asks=["Refund order A17.", "And where is B2?"],
    )
    assert log == ["lookup A17", "refund A17", "lookup B2"]
    assert heard.said() == [
        FILLER,
        " Your refund of $42.50 is on its way.",
        FILLER,  # a new reply: a new talk cycle, joined to nothing
        " B2 was delivered.",
    ]
    assert replies == ["Your refund of $42.50 is on its way.", "B2 was delivered."]


async def test_a_reply_that_speaks_before_its_call_needs_no_filler(
    store: Store, settings: Settings
) -> None:
    llm = FakeLLM(
        [
            FakeReply(
                "Let me look that up.", tool_calls=[FakeToolCall("get_weather", {"city": "Rome"})]
            ),
            "Sunny in Rome.",
        ]
    )
    _, heard, _ = await run_session(store, settings, llm)
    assert heard.said() == ["Let me look that up.", " Sunny in Rome."]


# -- calls that never complete -------------------------------------------------------------------
class EventLLM:
    """Streams scripted event lists, one per request; an exception in a list is raised there."""

    label = "events"

    def __init__(self, steps: Sequence[Sequence[LLMEvent | Exception]]) -> None:
        self._steps = [list(step) for step in steps]
        self.requests: list[LLMRequest] = []

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        self.requests.append(request)
        for event in self._steps.pop(0):
            if isinstance(event, Exception):
                raise event
            yield event
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        return None


def named(name: str = "get_weather") -> ToolCallDelta:
    """The early delta: the tool's name, before any argument is written."""
    return ToolCallDelta(index=0, id="call_early", name=name, arguments="")


async def test_a_named_call_whose_stream_drops_leaves_the_filler_and_the_apology(
    store: Store, settings: Settings
) -> None:
    llm = EventLLM([[named(), LLMError("connection dropped", provider="events")]])
    session, heard, [reply] = await run_session(store, settings, llm)
    apology = session.spec.error_message
    assert reply == apology
    assert heard.said() == [FILLER, apology]  # the failed reply was settled: a new cycle
    assert not any(kind == "tool" for kind, _ in heard.events)  # the call never ran
    assert not [t for t in session.turns if isinstance(t, ToolCallTurn | ToolResultTurn)]


async def test_a_named_call_withdrawn_for_speech_keeps_its_filler_and_runs_nothing(
    store: Store, settings: Settings
) -> None:
    """The embedded model names a tool, then withdraws the call (a value the caller never
    said) and asks for it instead: the filler was said, the question follows it, nothing
    runs, and the history holds no call."""
    llm = EventLLM(
        [[named(), ToolCallDelta(index=0, withdrawn=True), TextDelta("Which city?"), Usage()]]
    )
    session, heard, [reply] = await run_session(store, settings, llm)
    assert heard.events == [("say", FILLER), ("say", " Which city?")]
    assert reply == "Which city?" and len(llm.requests) == 1
    assert [b.content for b in bots(session)] == [FILLER, "Which city?"]
    assert not [t for t in session.turns if isinstance(t, ToolCallTurn | ToolResultTurn)]


async def test_a_named_call_then_speech_in_later_steps_says_the_filler_once(
    store: Store, settings: Settings
) -> None:
    """A name with no arguments that the provider does not withdraw is still a call: it runs
    (its arguments are wrong), and the steps after it never say a second filler."""
    llm = EventLLM(
        [
            [named(), TextDelta("Which city?"), Usage()],
            [named(), Usage()],
            [TextDelta("Which city do you mean?"), Usage()],
        ]
    )
    _, heard, _ = await run_session(store, settings, llm)
    said = heard.said()
    assert said[:2] == [FILLER, " Which city?"]
    assert said.count(FILLER) == 1 and len(llm.requests) == 3


# -- the delay ---------------------------------------------------------------------------------
class ManualTimer:
    """`ToolFiller`'s schedule, fired by the test instead of the loop's clock."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []
        self.cancelled = 0

    def __call__(self, delay: float, callback: Callable[[], None]) -> ManualTimer:
        self.pending.append((delay, callback))
        return self

    def cancel(self) -> None:
        self.cancelled += 1

    def fire(self) -> None:
        _, callback = self.pending.pop()
        callback()


def gated_tool(gate: asyncio.Event) -> Tool:
    @tool
    async def get_weather(city: str) -> str:
        """Get the weather for a city.

        Args:
            city: The city.
        """
        await gate.wait()
        return f"{city}: sunny"

    return get_weather


@dataclass
class Delayed:
    """A bare engine asked about the weather with a filler delayed by 0.8 s on a manual timer."""

    gate: asyncio.Event
    engine: ReplyEngine
    plan: ReplyPlan
    timer: ManualTimer = field(default_factory=ManualTimer)
    said: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, gate: asyncio.Event) -> Delayed:
        engine, turns = reply_engine("conv_delay", [gated_tool(gate)])
        tools = list(engine.executor.tools.values())
        plan = ReplyPlan(llm=weather_model(), instructions="Be brief.", tools=tools)
        delayed = cls(gate, engine, plan)
        plan.filler = ToolFiller(ToolFillerSettings(delay=0.8), schedule=delayed.timer)
        engine.bus.on("bot_text_delta", lambda turn, delta: delayed.said.append(delta))
        turns.add_user_text("What's the weather in Paris?")
        return delayed


async def test_a_delayed_filler_is_said_when_the_tool_is_still_running() -> None:
    d = Delayed.make(asyncio.Event())
    engine, timer, said, gate = d.engine, d.timer, d.said, d.gate
    reply = asyncio.create_task(engine.reply(d.plan))
    while not engine.tools_running:  # noqa: ASYNC110 - the engine's own state
        await asyncio.sleep(0)
    [(delay, _)] = timer.pending
    assert delay == 0.8 and said == []  # nothing yet: the wait is not over
    timer.fire()
    assert said == [FILLER]
    gate.set()
    await reply
    assert "".join(said) == FILLER + " " + ANSWER


async def test_a_delayed_filler_is_dropped_when_the_result_comes_first() -> None:
    gate = asyncio.Event()
    gate.set()  # the tool answers at once
    d = Delayed.make(gate)
    timer, said = d.timer, d.said
    await d.engine.reply(d.plan)
    assert timer.cancelled == 1 and "".join(said) == ANSWER
    timer.fire()  # a timer the loop ran anyway says nothing: it was cancelled
    assert "".join(said) == ANSWER
