"""The tool filler on a voice call (scripted providers, virtual clock): it is spoken like any
reply, and a caller who talks over it stops it and trims it to what was heard, while the tool
it announced runs on and its real result reaches the model."""

from __future__ import annotations

import asyncio

from tests.voice.fakes import Call, speech_seconds
from voxline import tool
from voxline.conversation.turns import BotTurn, ToolCallTurn, ToolResultTurn, UserTurn
from voxline.providers.llm.fake import FakeReply, FakeToolCall
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.tools.base import Tool

PHRASE = "Let me check the weather for you."  # 1.65 s of the fake voice
QUESTION = [(0.35, 0.6, "what's"), (0.6, 0.9, "the"), (0.9, 1.25, "weather")]
ASKING = [(0.0, 0.3), (0.9, 1.0)]  # silence, then the question from 0.3 s to 1.3 s
TURN = {"tool_filler": {"tools": {"get_weather": PHRASE}}}


def gated_weather(gate: asyncio.Event, runs: list[str]) -> Tool:
    @tool
    async def get_weather(city: str) -> str:
        """Get the weather for a city.

        Args:
            city: The city.
        """
        runs.append(city)
        await gate.wait()
        return f"{city}: sunny"

    return get_weather


def bots(call: Call) -> list[BotTurn]:
    return [t for t in call.session.turns if isinstance(t, BotTurn)]


async def test_the_filler_is_spoken_while_the_tool_runs(store: Store, settings: Settings) -> None:
    gate, runs = asyncio.Event(), []
    call = Call(
        store,
        settings,
        vad=ASKING,
        words=QUESTION,
        tools=[gated_weather(gate, runs)],
        turn=TURN,
        replies=[
            FakeReply(tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})]),
            FakeReply("It is sunny in Paris."),
        ],
    )
    await call.start()
    await call.run(4.0)
    assert runs == ["Paris"]
    assert call.tts.texts == [PHRASE]  # heard while the tool has not answered
    played = sum(s.frame.duration for s in call.transport.sent)
    assert abs(played - speech_seconds(PHRASE)) < 0.03
    gate.set()
    await call.run(3.0)
    assert call.tts.texts == [PHRASE, "It is sunny in Paris."]
    filler, answer = bots(call)
    assert filler.content == PHRASE and not filler.interrupted
    assert answer.content == "It is sunny in Paris."
    await call.close()


async def test_a_caller_who_talks_over_the_filler_stops_it(
    store: Store, settings: Settings
) -> None:
    gate, runs = asyncio.Event(), []
    words = [*QUESTION, (2.35, 2.6, "wait"), (2.6, 3.0, "actually")]
    call = Call(
        store,
        settings,
        vad=[*ASKING, (0.0, 1.0), (0.9, 1.0)],  # the caller speaks again from 2.3 s to 3.3 s
        words=words,
        tools=[gated_weather(gate, runs)],
        turn=TURN,
        replies=[
            FakeReply(tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})]),
            FakeReply("Sure, what else?"),
        ],
    )
    await call.start()
    await call.run(2.3)
    assert call.transport.sent, "the filler is playing when the caller cuts in"
    await call.run(1.0)
    assert len(call.transport.clears) == 1  # a barge-in, as for any speech
    [filler] = bots(call)
    assert filler.interrupted  # trimmed to the words that played
    assert 0 < len(filler.content) < len(PHRASE) and PHRASE.startswith(filler.content)
    played = sum(s.frame.duration for s in call.transport.sent)
    assert played < speech_seconds(PHRASE) - 0.5
    gate.set()  # the tool was never cancelled: it finishes and records its real result
    await call.run(3.0)
    assert runs == ["Paris"]
    [result] = [t for t in call.session.turns if isinstance(t, ToolResultTurn)]
    assert result.content == "Paris: sunny" and not result.is_error
    assert [t.content for t in call.session.turns if isinstance(t, UserTurn)] == [
        "what's the weather",
        "wait actually",
    ]
    # The model answering the interruption sees the filler as the caller heard it, with the
    # call it announced and that call's result.
    last = call.llm.requests[-1].messages
    [calling] = [m for m in last if m.role == "assistant" and m.tool_calls]
    assert calling.content == filler.content
    assert [m.content for m in last if m.role == "tool"] == ["Paris: sunny"]
    assert [t.name for t in call.session.turns if isinstance(t, ToolCallTurn)] == ["get_weather"]
    assert bots(call)[-1].content == "Sure, what else?"
    await call.close()
