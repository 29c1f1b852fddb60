"""Several tool steps in one reply, bounded: "check, then act" runs both tools in order with
each result handed back as a tool message, and at the bound the model is asked, with tools
off, to say what it did and what is left."""

from __future__ import annotations

import pytest

from tests.conversation.order_tools import order_tools, reply_engine
from voxline.conversation.engine import WRAP_UP_NOTE, ReplyEngine, ReplyPlan
from voxline.conversation.turns import BotTurn, SystemTurn, ToolCallTurn, ToolResultTurn
from voxline.providers.llm.base import LLM, LLMRequest
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.tools.base import Tool


def _engine(llm: LLM, tools: list[Tool], max_steps: int = 4) -> tuple[ReplyEngine, ReplyPlan]:
    engine, _ = reply_engine("conv_steps", tools)
    return engine, ReplyPlan(llm=llm, instructions="x", tools=tools, max_steps=max_steps)


async def test_check_then_act_runs_two_tool_steps_in_one_reply() -> None:
    log: list[str] = []
    llm = FakeLLM(
        [
            FakeReply(tool_calls=[FakeToolCall("lookup_order", {"order_id": "12345"})]),
            FakeReply(tool_calls=[FakeToolCall("refund_order", {"order_id": "12345"})]),
            FakeReply(text="It was delivered, so I refunded $42.50."),
        ]
    )
    engine, plan = _engine(llm, order_tools(log))
    engine.turns.add_user_text("Check order 12345 and refund it if it was delivered.")
    answer = await engine.reply(plan)
    assert log == ["lookup 12345", "refund 12345"]
    assert answer is not None and answer.content == "It was delivered, so I refunded $42.50."
    # Each later step saw the earlier results as tool messages answering their calls.
    second, third = llm.requests[1], llm.requests[2]
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "tool"]
    lookup_result = second.messages[-1]
    assert lookup_result.tool_call_id == second.messages[-2].tool_calls[0].id
    assert lookup_result.content == '{"status": "delivered", "total": "$42.50"}'
    assert [m.role for m in third.messages][-2:] == ["assistant", "tool"]
    assert all(r.tool_choice is None for r in llm.requests)


async def test_at_the_step_bound_the_model_says_what_it_did_and_what_is_left() -> None:
    log: list[str] = []

    def always_calls(request: LLMRequest) -> FakeReply:
        if request.tool_choice == "none":
            return FakeReply(text="I looked the order up twice; the refund is still to do.")
        return FakeReply(tool_calls=[FakeToolCall("lookup_order", {"order_id": "1"})])

    llm = FakeLLM(always_calls)
    engine, plan = _engine(llm, order_tools(log), max_steps=2)
    engine.turns.add_user_text("Check order 1 and refund it.")
    answer = await engine.reply(plan)
    assert log == ["lookup 1", "lookup 1"]  # two rounds, then no more tools
    assert len(llm.requests) == 3
    wrap_up = llm.requests[-1]
    assert wrap_up.tool_choice == "none" and wrap_up.tools  # tools listed, none allowed
    assert wrap_up.messages[-1].role == "system" and wrap_up.messages[-1].content == WRAP_UP_NOTE
    assert answer is not None and "still to do" in answer.content
    # The note was for that one request: it is not part of the conversation.
    assert not any(isinstance(t, SystemTurn) for t in engine.turns)


async def test_a_provider_ignoring_tool_choice_none_at_the_bound_runs_nothing_more() -> None:
    log: list[str] = []
    llm = FakeLLM(default=FakeReply(tool_calls=[FakeToolCall("lookup_order", {"order_id": "1"})]))
    engine, plan = _engine(llm, order_tools(log), max_steps=1)
    engine.turns.add_user_text("Check order 1.")
    await engine.reply(plan)
    assert log == ["lookup 1"] and len(llm.requests) == 2
    calls = [t for t in engine.turns if isinstance(t, ToolCallTurn)]
    results = [t for t in engine.turns if isinstance(t, ToolResultTurn)]
    assert len(calls) == len(results) == 1  # no call left without its result


@pytest.mark.parametrize("text", ["Hello, how are you?", "I live on Main Street."])
async def test_small_talk_is_one_spoken_step_with_no_tool(text: str) -> None:
    log: list[str] = []
    llm = FakeLLM([FakeReply(text="Nice to hear from you!")])
    engine, plan = _engine(llm, order_tools(log))
    engine.turns.add_user_text(text)
    answer = await engine.reply(plan)
    assert log == [] and len(llm.requests) == 1
    assert isinstance(answer, BotTurn) and answer.content == "Nice to hear from you!"
    assert not any(isinstance(t, ToolCallTurn) for t in engine.turns)
