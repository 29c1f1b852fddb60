"""Barge-in during a reply that calls tools: a started tool runs to completion and its real
result reaches the model (so it is never run twice), and a reply spanning several model steps
is trimmed across all of its bot turns to what was heard."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from voxline import Agent, Session, tool
from voxline.conversation.context import build_messages
from voxline.conversation.engine import (
    CLOSING_RESULT,
    Delivery,
    ReplyEngine,
    ReplyPlan,
)
from voxline.conversation.state import SessionState, StateMachine
from voxline.conversation.turns import BotTurn, ToolCallTurn, ToolResultTurn, TurnStore
from voxline.events import EventBus
from voxline.providers.llm.base import LLMRequest
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.tools.base import RunContext, Tool
from voxline.tools.executor import ToolExecutor

S = SessionState


class Harness:
    """A ReplyEngine wired the way a session wires it, with `interrupt` doing what the
    session's does: cancel the reply task, then settle."""

    def __init__(self, llm: FakeLLM, tools: Sequence[Tool] = (), *, auto: bool = True) -> None:
        self.llm = llm
        self.bus = EventBus()
        self.turns = TurnStore("conv_test", self.bus)
        self.state = StateMachine(self.bus, S.LISTENING)
        self.delivery = Delivery(auto=auto)
        self.engine = ReplyEngine(
            self.turns,
            self.bus,
            self.state,
            ToolExecutor(tools),
            self.delivery,
            lambda call_id: RunContext(conversation_id="conv_test", call_id=call_id),
        )
        self.plan = ReplyPlan(llm=llm, instructions="Be brief.", tools=list(tools))
        self.deltas: list[tuple[str, str]] = []  # (turn id, delta)
        self.bus.on("bot_text_delta", lambda turn, delta: self.deltas.append((turn.id, delta)))
        self.task: asyncio.Task[BotTurn | None] | None = None

    def ask(self, text: str) -> asyncio.Task[BotTurn | None]:
        self.turns.add_user_text(text)
        self.task = asyncio.create_task(self.engine.reply(self.plan))
        return self.task

    async def interrupt(self, heard_text: str | None = None) -> BotTurn | None:
        assert self.task is not None
        self.task.cancel()
        cut, _ = self.engine.settle_interrupted(heard_text)
        if self.state.state in (S.THINKING, S.SPEAKING, S.CALLING_TOOLS):
            self.state.to(S.INTERRUPTED)
            self.state.to(S.LISTENING)
        with pytest.raises(asyncio.CancelledError):
            await self.task
        return cut

    def bots(self) -> list[BotTurn]:
        return [t for t in self.turns if isinstance(t, BotTurn)]

    def results(self) -> list[ToolResultTurn]:
        return [t for t in self.turns if isinstance(t, ToolResultTurn)]


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - polling state the engine exposes
            await asyncio.sleep(0.001)


def booking_tool(booked: list[str], delay: float = 0.5) -> Tool:
    @tool
    async def book(slot: str) -> str:
        """Book a slot.

        Args:
            slot: The slot.
        """
        await asyncio.sleep(delay)
        booked.append(slot)
        return f"booked {slot}, reference B-17"

    return book


def booking_model() -> FakeLLM:
    """A model that books until it has seen a booking's result, then confirms it: shown a
    "may not have run" result, it books again, exactly as a real model does."""

    def respond(request: LLMRequest) -> FakeReply:
        if any(m.role == "tool" and "B-17" in (m.content or "") for m in request.messages):
            return FakeReply(text="You are booked for 9am, reference B-17.")
        return FakeReply(
            text="Let me book that.", tool_calls=[FakeToolCall("book", {"slot": "9am"})]
        )

    return FakeLLM(respond)


# -- a started tool survives the interruption ------------------------------------------------
async def test_a_running_tool_finishes_once_and_the_next_request_has_its_result() -> None:
    booked: list[str] = []
    h = Harness(booking_model(), [booking_tool(booked)])
    h.ask("book 9am please")
    await until(lambda: h.state.state == S.CALLING_TOOLS)
    await h.interrupt()

    assert h.engine.tools_running  # cancelled the reply, not the tool
    assert h.results() == []  # no "cancelled, may not have run" guess

    reply = h.ask("hello? did it work?")  # the user speaks while the tool still runs
    turn = await reply
    assert turn is not None and "B-17" in turn.content
    assert booked == ["9am"]  # ran exactly once
    [result] = h.results()
    assert result.content == "booked 9am, reference B-17" and not result.is_error
    assert not any(r.is_error for r in h.results())
    assert len(h.llm.requests) == 2  # the model was never asked again without the result
    second = h.llm.requests[1].messages
    assert [m.role for m in second] == ["system", "user", "assistant", "tool", "user"]
    assert second[2].content == "Let me book that." and second[2].tool_calls[0].name == "book"
    assert second[3].content == "booked 9am, reference B-17"
    assert second[3].tool_call_id == second[2].tool_calls[0].id


async def test_a_result_recorded_after_the_users_next_words_follows_its_call() -> None:
    turns = TurnStore("conv_test")
    turns.add_user_text("book it")
    turns.add_tool_call("call_1", "book", "{}")
    turns.add_user_text("are you there?")
    turns.add_tool_result("call_1", "book", "booked")
    messages = build_messages("sys", turns)
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert messages[3].tool_call_id == "call_1"


async def test_an_unknown_unanswered_call_is_left_alone() -> None:
    """A call this engine did not make (another connection's tool, still running; a restored
    history) gets no made-up result: the request leaves it out until its own result lands."""
    h = Harness(FakeLLM([FakeReply(text="One moment.", token_delay=0.01)]))
    h.turns.add_tool_call("call_elsewhere", "book", "{}")
    h.ask("hi")
    await until(lambda: bool(h.deltas))
    await h.interrupt()
    assert h.results() == []
    assert all(m.role != "tool" and not m.tool_calls for m in build_messages("s", h.turns))


async def test_a_call_made_while_the_group_is_closing_is_answered_as_not_run() -> None:
    booked: list[str] = []
    llm = FakeLLM(
        [FakeReply(tool_calls=[FakeToolCall("book", {"slot": "9am"})]), "I could not book it."]
    )
    h = Harness(llm, [booking_tool(booked)])
    await h.engine.tasks.close()  # the conversation is ending
    turn = await h.ask("book 9am")
    assert turn is not None and turn.content == "I could not book it."
    assert booked == []
    assert [r.content for r in h.results()] == [CLOSING_RESULT]
    assert llm.requests[1].messages[-1].content == CLOSING_RESULT


async def test_closing_stops_a_tool_still_running_with_a_truthful_result() -> None:
    booked: list[str] = []
    h = Harness(booking_model(), [booking_tool(booked, delay=30)])
    h.ask("book 9am")
    await until(lambda: h.state.state == S.CALLING_TOOLS)
    await h.interrupt()
    await h.engine.finish_tools(grace=0.05)
    assert booked == [] and not h.engine.tools_running
    [result] = h.results()
    assert result.is_error and "may not have finished" in result.content


async def test_finish_tools_lets_a_tool_that_began_finish() -> None:
    booked: list[str] = []
    h = Harness(booking_model(), [booking_tool(booked, delay=0.2)])
    h.ask("book 9am")
    await until(lambda: h.state.state == S.CALLING_TOOLS)
    await h.interrupt()
    await h.engine.finish_tools()
    assert booked == ["9am"]
    assert [r.content for r in h.results()] == ["booked 9am, reference B-17"]


# -- a reply spanning a tool call is trimmed across all its turns -----------------------------
def look_up_model() -> FakeLLM:
    second = "The result is that your order shipped on Monday and arrives on Thursday."
    return FakeLLM(
        [
            FakeReply(
                text="Let me look that up.", tool_calls=[FakeToolCall("lookup", {"q": "order"})]
            ),
            FakeReply(text=second, token_delay=0.01),
        ]
    )


def lookup_tool() -> Tool:
    @tool
    def lookup(q: str) -> str:
        """Look something up.

        Args:
            q: What.
        """
        return f"{q}: shipped Monday"

    return lookup


async def test_heard_text_is_mapped_across_the_turns_of_the_reply() -> None:
    h = Harness(look_up_model(), [lookup_tool()], auto=False)
    h.ask("where is my order?")
    await until(lambda: len(h.bots()) == 2 and len(h.bots()[1].content) > 20)
    spoken = "".join(delta for _, delta in h.deltas)
    assert spoken.startswith("Let me look that up. The result is")
    # ConversationRelay reports what was heard of the whole talk cycle, joints included.
    await h.interrupt(heard_text="Let me look that up. The result is")

    first, second = h.bots()
    assert first.content == "Let me look that up." and not first.interrupted
    assert second.content == "The result is" and second.interrupted
    assert [t.kind.value for t in h.turns] == [
        "user_text",
        "bot_text",
        "tool_call",
        "tool_result",
        "bot_text",
    ]
    messages = build_messages("sys", h.turns)
    assistant = [m.content for m in messages if m.role == "assistant"]
    assert assistant == ["Let me look that up.", "The result is"]  # no "Let me look" twice


async def test_hearing_that_stopped_in_the_first_step_drops_the_later_text() -> None:
    h = Harness(look_up_model(), [lookup_tool()], auto=False)
    h.ask("where is my order?")
    await until(lambda: len(h.bots()) == 2 and len(h.bots()[1].content) > 10)
    cut = await h.interrupt(heard_text="Let me look")
    [first] = h.bots()
    assert cut is first and first.content == "Let me look" and first.interrupted
    kinds = [t.kind.value for t in h.turns]
    assert kinds == ["user_text", "bot_text", "tool_call", "tool_result"]  # the tool ran


async def test_without_heard_text_each_turn_keeps_what_delivery_recorded() -> None:
    h = Harness(look_up_model(), [lookup_tool()], auto=False)
    h.ask("where is my order?")
    await until(lambda: len(h.bots()) == 2 and len(h.bots()[1].content) > 20)
    first, second = h.bots()
    h.delivery.mark(first.id, len(first.content))  # the speaker played all of the first
    h.delivery.mark(second.id, len("The result"))
    cut = await h.interrupt()
    assert first.content == "Let me look that up." and not first.interrupted
    assert cut is second and second.content == "The result"


async def test_a_later_step_never_heard_is_deleted_and_the_tool_pair_stays() -> None:
    h = Harness(look_up_model(), [lookup_tool()], auto=False)
    h.ask("where is my order?")
    await until(lambda: len(h.bots()) == 2)
    first = h.bots()[0]
    h.delivery.mark(first.id, len(first.content))
    cut = await h.interrupt()
    assert cut is None
    assert [b.content for b in h.bots()] == ["Let me look that up."]
    assert [r.content for r in h.results()] == ["order: shipped Monday"]


# -- through a real session --------------------------------------------------------------------
async def test_session_barge_in_during_a_booking_books_once(store: Store, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", llm="fake")
    booked: list[str] = []
    llm = booking_model()
    agent = Agent(name="booker", tools=[booking_tool(booked)])
    session = Session(agent, llm=llm, store=store, settings=settings)
    await session.start()
    first = asyncio.create_task(session.send_text("book 9am"))
    await until(lambda: session.state == S.CALLING_TOOLS)
    session.interrupt()
    assert await first == ""
    assert "B-17" in await session.send_text("did it work?")
    assert booked == ["9am"]
    results = [t for t in session.turns if isinstance(t, ToolResultTurn)]
    assert [r.content for r in results] == ["booked 9am, reference B-17"]
    calls = [t for t in session.turns if isinstance(t, ToolCallTurn)]
    assert len(calls) == 1
    await session.close()
