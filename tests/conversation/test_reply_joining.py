"""Text of separate model steps is joined for speech ("up. The", never "up.The"), the stored
turns stay as the model wrote them, and what a channel heard maps back onto the pieces."""

from __future__ import annotations

import pytest

from tests.conversation.order_tools import reply_engine
from voxline.conversation.engine import ReplyEngine, ReplyPlan
from voxline.conversation.turns import BotTurn, TurnStore
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.text.joining import heard_lengths, separator
from voxline.tools.base import Tool
from voxline.tools.decorator import tool


# -- the rule --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("before", "after", "joint"),
    [
        ("", "Hello.", ""),  # nothing spoken yet
        ("Let me look that up.", "The result", " "),
        ("Let me check", "The result", " "),  # no punctuation: still never glued
        ("One moment. ", "The result", ""),  # already ends in a space
        ("Let me look that up.", "\n\nThe result", "\n\n"),  # the model's own break is kept
        ("Let me check", ", and then", ""),  # a continuation
        ("Are you sure", "?", ""),
        ("Let me check", "", ""),
    ],
)
def test_separator(before: str, after: str, joint: str) -> None:
    assert separator(before, after) == joint


@pytest.mark.parametrize(
    ("heard", "parts", "lengths"),
    [
        ("", ["Let me look that up.", "The result is 42."], [0, 0]),
        ("Let me look", ["Let me look that up.", "The result is 42."], [11, 0]),
        ("Let me look that up.", ["Let me look that up.", "The result is 42."], [20, 0]),
        (
            "Let me look that up. The result",
            ["Let me look that up.", "The result is 42."],
            [20, 10],
        ),
        # A channel that dropped the joint, or changed case and spacing, still lines up.
        (
            "let me look that up.The  result",
            ["Let me look that up.", "The result is 42."],
            [20, 10],
        ),
        (
            "Let me look that up. The result is 42.",
            ["Let me look that up.", "The result is 42."],
            [20, 17],
        ),
        # Only the latest utterance reported: the earlier parts count as heard.
        ("The result", ["Let me look that up.", "The result is 42."], [20, 10]),
        # A rewritten word: the rest is shared out by length.
        (
            "Let me look that up. The outcome is",
            ["Let me look that up.", "The result is 42."],
            [20, 14],
        ),
        ("Something else entirely", ["Hi.", "Bye now, see you later friend."], [3, 19]),
    ],
)
def test_heard_lengths(heard: str, parts: list[str], lengths: list[int]) -> None:
    assert heard_lengths(heard, parts) == lengths


def test_heard_lengths_never_exceed_the_parts() -> None:
    parts = ["Short.", "Also short."]
    lengths = heard_lengths("Short. Also short. And then some more words nobody wrote.", parts)
    assert lengths == [6, 11]


# -- in the engine -----------------------------------------------------------------------------
def _engine(llm: FakeLLM, tools: list[Tool]) -> tuple[ReplyEngine, ReplyPlan, list[str], TurnStore]:
    engine, turns = reply_engine("conv_join", tools)
    deltas: list[str] = []
    turns.bus.on("bot_text_delta", lambda turn, delta: deltas.append(delta))
    return engine, ReplyPlan(llm=llm, instructions="x", tools=tools), deltas, turns


def _lookup() -> Tool:
    @tool
    async def lookup(q: str) -> str:
        """Look up.

        Args:
            q: What.
        """
        return "42"

    return lookup


async def test_steps_are_joined_for_speech_and_stored_clean() -> None:
    llm = FakeLLM(
        [
            FakeReply(text="Let me look that up.", tool_calls=[FakeToolCall("lookup", {"q": "x"})]),
            FakeReply(text="The result is 42."),
        ]
    )
    engine, plan, deltas, turns = _engine(llm, [_lookup()])
    turns.add_user_text("what is it?")
    await engine.reply(plan)
    assert "".join(deltas) == "Let me look that up. The result is 42."
    bots = [t for t in turns if isinstance(t, BotTurn)]
    assert [b.content for b in bots] == ["Let me look that up.", "The result is 42."]
    # Text channels deliver what was emitted: the counts cover the stored content exactly.
    assert [engine.delivery.heard(b) for b in bots] == [b.content for b in bots]


async def test_leading_whitespace_is_not_stored_and_a_blank_step_makes_no_turn() -> None:
    llm = FakeLLM(
        [
            FakeReply(text=["\n"], tool_calls=[FakeToolCall("lookup", {"q": "x"})]),
            FakeReply(text=[" ", " It is", " 42."]),
        ]
    )
    engine, plan, deltas, turns = _engine(llm, [_lookup()])
    turns.add_user_text("what is it?")
    await engine.reply(plan)
    [bot] = [t for t in turns if isinstance(t, BotTurn)]
    assert bot.content == "It is 42."
    assert "".join(deltas) == "It is 42."  # the first thing said is joined to nothing


async def test_a_note_said_during_a_tool_is_joined_on_both_sides() -> None:
    engine_ref: list[ReplyEngine] = []

    @tool
    async def slow(q: str) -> str:
        """Slow.

        Args:
            q: What.
        """
        engine_ref[0].say("Still working on it.")
        return "done"

    llm = FakeLLM(
        [
            FakeReply(text="Let me check.", tool_calls=[FakeToolCall("slow", {"q": "x"})]),
            FakeReply(text="All done."),
        ]
    )
    engine, plan, deltas, turns = _engine(llm, [slow])
    engine_ref.append(engine)
    turns.add_user_text("go")
    await engine.reply(plan)
    assert "".join(deltas) == "Let me check. Still working on it. All done."
    assert [t.content for t in turns if isinstance(t, BotTurn)] == [
        "Let me check.",
        "Still working on it.",
        "All done.",
    ]
    # After the reply, a new talk cycle starts joined to nothing.
    engine.say("Anything else?")
    assert deltas[-1] == "Anything else?"
