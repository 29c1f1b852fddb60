"""Speculative replies: a guess started at the caller's pause is committed only when the turn's
final words match, and nothing of a guess (text, turns, events, tools) is ever seen otherwise.

The session tests drive `Session.speculate` / `send_text(speculation=...)` directly on the
scripted model; the pipeline tests run whole calls on the virtual clock (see `fakes`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from voxline import Agent, Session, tool
from voxline.conversation.speculation import SpeculativeReply, normalize
from voxline.conversation.turns import BotTurn, ToolCallTurn, UserTurn
from voxline.providers.llm.base import LLMEvent, LLMRequest, TextDelta
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.providers.stt.base import PCM16, Transcript
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.voice import VoiceOptions

from .fakes import Call, ScriptedSTT

QUESTION = [(0.35, 0.6, "what's"), (0.6, 0.9, "the"), (0.9, 1.25, "weather")]
ASKING = [(0.0, 0.3), (0.9, 1.0)]  # silence, then the question from 0.3 s to 1.3 s
TURN_ENDS = 1.3 + 0.6  # speech end plus the end-of-turn silence
GUESS_AT = 1.3 + 0.2 + 0.1  # the pause transcript (0.2 s in) takes the scripted STT 0.1 s


class Watched:
    """A session on the scripted model, with every event it emits recorded in order."""

    EVENTS = ("bot_text_delta", "turn_added", "tool_started", "reply_started", "metrics")

    def __init__(self, store: Store, settings: Settings, llm: Any, tools: list[Any]) -> None:
        agent = Agent(name="tester", tools=tools)
        self.session = Session(agent, llm=llm, store=store, settings=settings)
        self.events: list[tuple[str, dict[str, Any]]] = []
        for name in self.EVENTS:
            self.session.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        return lambda **payload: self.events.append((name, payload))

    def said(self) -> str:
        return "".join(p["delta"] for name, p in self.events if name == "bot_text_delta")

    async def stored_text(self) -> str:
        await self.session.wait_idle()
        rows = await self.session.store.load_turns(self.session.id)
        return " ".join(str(row.get("content") or "") for row in rows)

    async def settled_guess(self, words: str) -> SpeculativeReply:
        """Start the session and guess at `words`, letting the guess run as far as it can
        before the caller's final words arrive (what the pipeline does at a pause)."""
        await self.session.start(greet=False)
        guess = self.session.speculate(words)
        assert guess is not None
        await settled(lambda: guess.done)
        return guess


async def settled(guess_done: Any) -> None:
    """Let the guess's background read run until it has nothing more to do right now."""
    for _ in range(50):
        await asyncio.sleep(0.01)
        if guess_done():
            return


def test_normalize_ignores_case_punctuation_and_spacing() -> None:
    assert normalize("What's  the weather?") == normalize("what's the weather")
    assert normalize("Book a table, please.") == "book a table please"
    assert normalize("what's the weather") != normalize("what's the time")


async def test_a_matching_guess_is_committed_and_the_model_is_asked_once(
    store: Store, settings: Settings
) -> None:
    llm = FakeLLM([FakeReply("It is sunny.")])
    watched = Watched(store, settings, llm, [])
    session = watched.session
    guess = await watched.settled_guess("What's the weather?")
    assert watched.events == []  # the whole reply is written, and nothing of it was seen
    assert [t for t in session.turns if isinstance(t, UserTurn | BotTurn)] == []
    reply = await session.send_text("what's the weather", speculation=guess)
    assert reply == "It is sunny."
    assert len(llm.requests) == 1 and guess.outcome == "kept"
    [user] = [t for t in session.turns if isinstance(t, UserTurn)]
    assert user.content == "what's the weather"  # the final words are recorded, not the guess's
    assert watched.said() == "It is sunny."
    await session.close()


async def test_a_guess_on_other_words_is_discarded_unseen_unsaid_and_unstored(
    store: Store, settings: Settings
) -> None:
    llm = FakeLLM([FakeReply("It is sunny in Paris."), FakeReply("It is half past two.")])
    watched = Watched(store, settings, llm, [])
    session = watched.session
    guess = await watched.settled_guess("what's the weather")
    reply = await session.send_text("what's the time", speculation=guess)
    assert reply == "It is half past two."
    assert guess.outcome == "cancelled"
    assert [r.messages[-1].content for r in llm.requests] == [
        "what's the weather",
        "what's the time",
    ]
    assert "sunny" not in watched.said()
    assert [t.content for t in session.turns if isinstance(t, BotTurn)] == ["It is half past two."]
    assert "sunny" not in await watched.stored_text()
    await session.close()


async def test_a_guess_is_not_served_when_the_history_changed_since(
    store: Store, settings: Settings
) -> None:
    llm = FakeLLM([FakeReply("A stale answer."), FakeReply("A fresh answer.")])
    session = Session(Agent(name="tester"), llm=llm, store=store, settings=settings)
    await session.start(greet=False)
    guess = session.speculate("hello")
    assert guess is not None
    session.turns.add_system("The caller is a returning customer.")  # e.g. a summary landed
    assert await session.send_text("hello", speculation=guess) == "A fresh answer."
    assert len(llm.requests) == 2 and guess.outcome == "cancelled"
    await session.close()


async def test_no_guess_is_made_for_an_agent_that_screens_the_callers_words(
    store: Store, settings: Settings
) -> None:
    guarded = {"input": {"blocked_topics": {"keywords": ["lawsuit"], "response": "Not that."}}}
    agent = Agent(name="guarded", guardrails=guarded)
    llm = FakeLLM([FakeReply("About your lawsuit...")])
    session = Session(agent, llm=llm, store=store, settings=settings)
    await session.start(greet=False)
    assert session.speculate("tell me about my lawsuit") is None
    assert llm.requests == []  # the model never saw words the guardrail had not checked
    await session.close()


def weather_guess(store: Store, settings: Settings, answer: str) -> tuple[Watched, list[str]]:
    """A watched session whose model calls `get_weather` for Paris, then says `answer`; the
    list holds the cities the tool actually ran for."""
    runs: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Get the weather for a city.

        Args:
            city: The city name.
        """
        runs.append(city)
        return f"{city}: sunny"

    call = FakeToolCall("get_weather", {"city": "Paris"})
    llm = FakeLLM([FakeReply(tool_calls=[call]), FakeReply(answer)])
    return Watched(store, settings, llm, [get_weather]), runs


async def test_a_guess_that_calls_a_tool_runs_it_only_once_committed(
    store: Store, settings: Settings
) -> None:
    watched, runs = weather_guess(store, settings, "Sunny in Paris.")
    session = watched.session
    guess = await watched.settled_guess("weather in Paris")
    assert runs == [] and watched.events == []  # the model chose the tool; nothing ran
    assert not any(isinstance(t, ToolCallTurn) for t in session.turns)
    assert await session.send_text("Weather in Paris?", speculation=guess) == "Sunny in Paris."
    assert runs == ["Paris"]
    await session.close()


async def test_a_discarded_guess_never_runs_the_tool_it_chose(
    store: Store, settings: Settings
) -> None:
    watched, runs = weather_guess(store, settings, "Hello there.")
    session = watched.session
    guess = await watched.settled_guess("weather in Paris")
    assert await session.send_text("hello", speculation=guess) == "Hello there."
    assert runs == []
    assert not any(name == "tool_started" for name, _ in watched.events)
    assert not any(isinstance(t, ToolCallTurn) for t in session.turns)
    await session.close()


class EndlessLLM:
    """Writes "word " forever, one every 10 ms, and notes when its stream is closed."""

    label = "endless"

    def __init__(self) -> None:
        self.written = 0
        self.closed = 0

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        try:
            while True:
                await asyncio.sleep(0.01)
                self.written += 1
                yield TextDelta("word ")
        finally:
            self.closed += 1

    async def aclose(self) -> None:
        return None


async def test_cancelling_a_guess_stops_the_model(store: Store, settings: Settings) -> None:
    llm = EndlessLLM()
    session = Session(Agent(name="tester"), llm=llm, store=store, settings=settings)
    await session.start(greet=False)
    guess = session.speculate("tell me a story")
    assert guess is not None
    await asyncio.sleep(0.1)
    assert llm.written > 0
    guess.cancel()
    await settled(lambda: guess.done)
    assert guess.done and llm.closed == 1
    written = llm.written
    await asyncio.sleep(0.05)
    assert llm.written == written  # the model stopped writing
    await session.close()


# -- in a call ---------------------------------------------------------------------------------
async def test_the_guess_made_at_the_pause_is_heard_only_after_the_turn_ends(
    store: Store, settings: Settings
) -> None:
    reply = FakeReply("It will be sunny.", ttft=0.1)
    call = Call(store, settings, vad=ASKING, words=QUESTION, replies=[reply])
    seen: list[tuple[float, str]] = []
    call.session.on("bot_text_delta", lambda turn, delta: seen.append((call.clock.now(), delta)))
    call.session.on("turn_added", lambda turn: seen.append((call.clock.now(), type(turn).__name__)))
    await call.start()
    await call.run(1.85)  # the model has answered (from 1.7 s), the turn has not ended
    assert call.pipeline.speculator.started == 1
    assert len(call.llm.requests) == 1 and seen == []
    await call.run(1.5)
    assert seen[0][1] == "UserTurn"
    assert seen[0][0] == pytest.approx(TURN_ENDS, abs=0.021)
    assert all(at >= seen[0][0] for at, _ in seen)
    assert len(call.llm.requests) == 1 and call.pipeline.speculator.kept == 1
    [latency] = call.turn_metrics()
    assert latency.llm_first_token == pytest.approx(latency.end_of_turn, abs=0.021)
    assert [t.content for t in call.session.turns if isinstance(t, BotTurn)] == [reply.text]
    await call.close()


async def test_without_speculation_the_model_starts_when_the_turn_ends(
    store: Store, settings: Settings
) -> None:
    reply = FakeReply("It will be sunny.", ttft=0.1)
    options = VoiceOptions(speculate=False)
    call = Call(store, settings, vad=ASKING, words=QUESTION, replies=[reply], options=options)
    await call.start()
    await call.run(3.0)
    [latency] = call.turn_metrics()
    assert latency.llm_first_token == pytest.approx(latency.end_of_turn + 0.1, abs=0.021)
    assert call.pipeline.speculator.started == 0
    await call.close()


async def test_speaking_again_cancels_the_guess_within_a_chunk(
    store: Store, settings: Settings
) -> None:
    words = [(0.35, 0.8, "book"), (0.8, 1.2, "a"), (1.75, 2.2, "table")]
    vad = [(0.0, 0.3), (0.9, 1.0), (0.0, 0.4), (0.9, 0.6)]  # speech, a 0.4 s pause, speech
    guess = FakeReply("Booking a table for you now.", token_delay=0.2)
    call = Call(store, settings, vad=vad, words=words, replies=[guess, FakeReply("Sure.")])
    await call.start()
    await call.run(1.7)  # the guess on "book a" began at 1.6 s and is still being written
    assert call.pipeline.speculator.open is not None and call.llm.cancelled == 0
    await call.run(0.04)  # the caller speaks again at 1.7 s
    assert call.pipeline.speculator.open is None and call.llm.cancelled == 1
    assert call.pipeline.speculator.discarded == 1
    await call.run(3.0)
    assert [t.content for t in call.session.turns if isinstance(t, BotTurn)] == ["Sure."]
    assert call.tts.texts == ["Sure."]
    await call.close()


async def test_the_first_audio_starts_at_the_first_clause(store: Store, settings: Settings) -> None:
    text = "Sure, it will be sunny all day today."
    firsts: dict[bool, float] = {}
    for early in (True, False):
        # No guess here: its head start would hide part of the wait this test measures.
        options = VoiceOptions(speculate=False, first_chunk_words=4 if early else None)
        reply = FakeReply(text, token_delay=0.1)
        call = Call(store, settings, vad=ASKING, words=QUESTION, replies=[reply], options=options)
        await call.start()
        await call.run(4.0)
        [latency] = call.turn_metrics()
        assert latency.llm_first_token is not None and latency.first_audio is not None
        firsts[early] = latency.first_audio - latency.llm_first_token
        if early:
            assert call.tts.texts == ["Sure,", "it will be sunny all day today."]
        else:
            assert call.tts.texts == [text]
        await call.close()
    # "Sure, " is the first delta. The whole sentence needs seven more words at 0.1 s each,
    # and its last word is certain only when the stream ends (the usage event, 0.1 s later).
    assert firsts[True] == pytest.approx(0.05, abs=0.021)  # the fake TTS's delay
    assert firsts[False] == pytest.approx(0.85, abs=0.021)


async def test_text_known_in_full_is_spoken_in_whole_sentences(
    store: Store, settings: Settings
) -> None:
    call = Call(store, settings, vad=[(0.0, 0.3)], words=[], replies=[])
    await call.start()
    await call.session.say("Hello there, welcome to the shop. How can I help?")
    await call.run(4.0)
    assert call.tts.texts == ["Hello there, welcome to the shop.", "How can I help?"]
    await call.close()


class SecondThoughtsSTT(ScriptedSTT):
    """Hears the scripted words the first time, and `later` on every transcription after."""

    def __init__(self, inner: ScriptedSTT, later: str) -> None:
        super().__init__(inner._clock, inner.words, inner.delay)
        self.later = later

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        heard = await super().transcribe(pcm, language=language)
        later = Transcript(self.later, audio_duration=heard.audio_duration)
        return heard if len(self.calls) == 1 else later


async def test_a_guess_the_final_transcript_contradicts_is_never_heard(
    store: Store, settings: Settings
) -> None:
    guess = FakeReply("It will be sunny all week.", token_delay=0.05)
    call = Call(
        store, settings, vad=ASKING, words=QUESTION, replies=[guess, FakeReply("It is noon.")]
    )
    stt = call.pipeline.listener.stt = SecondThoughtsSTT(call.stt, "what's the time")
    await call.start()
    await call.run(1.8)  # the guess on "what's the weather" began at 1.6 s
    assert call.pipeline.speculator.open is not None
    call.pipeline.end_input()  # the call's audio ends: the turn is transcribed again, whole
    await call.run(3.0)
    assert len(stt.calls) == 2
    assert [r.messages[-1].content for r in call.llm.requests] == [
        "what's the weather",
        "what's the time",
    ]
    assert call.pipeline.speculator.discarded == 1 and call.pipeline.speculator.kept == 0
    assert [t.content for t in call.session.turns if isinstance(t, BotTurn)] == ["It is noon."]
    assert call.tts.texts == ["It is noon."]
    await call.close()
