"""A whole reply through the engine on the local provider, with llama.cpp scripted: what the
model is shown at each step of "check, then act", a small-talk turn that calls nothing, and a
call named early then withdrawn (an invented value), which the engine never runs."""

from __future__ import annotations

import itertools

from tests.conversation.order_tools import order_tools, reply_engine
from tests.local.scripted_engine import ScriptedEngine
from voxline.conversation.engine import ReplyPlan
from voxline.conversation.turns import BotTurn, ToolCallTurn, TurnStore
from voxline.providers.llm.local import ANSWERED_NOTE, LocalLLM


async def _reply(
    outputs: list[list[str]], said: str
) -> tuple[ScriptedEngine, TurnStore, list[str]]:
    scripted = ScriptedEngine(outputs)
    llm = LocalLLM(scripted, "local:scripted")  # type: ignore[arg-type]
    log: list[str] = []
    tools = order_tools(log)
    engine, turns = reply_engine("conv_local", tools)
    turns.add_user_text(said)
    await engine.reply(ReplyPlan(llm=llm, instructions="Be brief.", tools=tools))
    return scripted, turns, log


async def test_check_then_act_shows_each_result_as_a_tool_response_on_a_growing_prompt() -> None:
    scripted, turns, log = await _reply(
        [
            ['<tool_call>\n{"name": "lookup_order", ', '"arguments": {"order_id": "12345"}}'],
            ['lookup_order"'],  # the name, chosen after the call's opening
            ['{"order_id": ', '"12345"}'],  # then the arguments
            ['{"name": "refund_order", "arguments": {"order_id": "12345"}}'],
            ['refund_order"'],
            ['{"order_id": "12345"}'],
            ["It was delivered, so I refunded", " $42.50."],
        ],
        "Check order 12345 and refund it if it was delivered.",
    )
    assert log == ["lookup 12345", "refund 12345"]
    prompts = [body["prompt"] for body in scripted.bodies]
    assert len(prompts) == 7
    for before, after in itertools.pairwise(prompts):
        # Each step appends to the step before: the cached prefix is never invalidated.
        assert after.startswith(before)
    lookup = '<tool_response>\n{"status": "delivered", "total": "$42.50"}\n</tool_response>'
    assert f"<|im_start|>user\n{lookup}<|im_end|>" in prompts[3]
    # Both tools have now done all the caller asked: the last step is the answer, with a
    # note after the refund's result (appended: the cached prefix still holds).
    assert prompts[6].endswith(
        '<|im_start|>user\n<tool_response>\n{"refunded": "$42.50"}\n</tool_response>'
        f"<|im_end|>\n<|im_start|>system\n{ANSWERED_NOTE}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert all(p.count("<|im_start|>system") == 1 for p in prompts[:6])
    # The steps that may call run unconstrained; a call's name and arguments, and the answer
    # once nothing is left to call (speech only), are constrained.
    assert ["grammar" in body for body in scripted.bodies] == [False, True, True] * 2 + [True]
    spoken = [t.content for t in turns if isinstance(t, BotTurn)]
    assert spoken == ["It was delivered, so I refunded $42.50."]


async def test_small_talk_calls_nothing_and_is_spoken_from_the_first_token() -> None:
    scripted, turns, log = await _reply([["Hi", "! I'm well, thanks."]], "Hello, how are you?")
    assert log == [] and len(scripted.bodies) == 1
    assert not any(isinstance(t, ToolCallTurn) for t in turns)


async def test_a_call_named_then_withdrawn_is_never_run_and_the_question_is_spoken() -> None:
    """The engine sees the name (`ToolCallDelta` with a name and no arguments), then the
    withdrawal and the question as speech: the accumulator drops the call, so nothing runs
    and no call turn is stored."""
    scripted, turns, log = await _reply(
        [['{"'], ['lookup_order"'], ['{"order_id": "12345"}'], ["Which order", " number?"]],
        "Can you check my order?",
    )
    assert log == [] and len(scripted.bodies) == 4
    assert not any(isinstance(t, ToolCallTurn) for t in turns)
    assert [t.content for t in turns if isinstance(t, BotTurn)] == ["Which order number?"]
