"""The voice pipeline on scripted providers and a virtual clock: turn taking, barge-in, metrics.

Timings are exact because nothing here waits on real time: the scripted VAD says where the
caller speaks, the scripted STT which words lie where, the fake TTS how long each sentence
sounds, and the clock moves 20 ms per inbound frame.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from voxline import SessionState, tool
from voxline.audio.playback import PlaybackTracker
from voxline.conversation.turns import BotTurn, ToolCallTurn, ToolResultTurn, UserTurn
from voxline.providers.llm.fake import FakeReply, FakeToolCall
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.voice import TurnLatency, VoiceOptions

from .fakes import Call, speech_seconds

QUESTION = [(0.35, 0.6, "what's"), (0.6, 0.9, "the"), (0.9, 1.25, "weather")]
ASKING = [(0.0, 0.3), (0.9, 1.0)]  # silence, then the question from 0.3 s to 1.3 s
SENTENCES = [
    "It will be sunny all day today.",
    "Expect a light breeze in the afternoon.",
    "Tomorrow looks much the same.",
]
LONG_REPLY = " ".join(SENTENCES)


def users(call: Call) -> list[str]:
    return [t.content for t in call.session.turns if isinstance(t, UserTurn)]


def bots(call: Call) -> list[BotTurn]:
    return [t for t in call.session.turns if isinstance(t, BotTurn)]


def played_seconds(call: Call) -> float:
    return sum(s.frame.duration for s in call.transport.sent)


def heard(sentences: list[str], seconds: float) -> str:
    """What the caller heard of `sentences` after `seconds` of playback (the reference)."""
    tracker = PlaybackTracker()
    for sentence in sentences:
        tracker.add(sentence, speech_seconds(sentence))
    tracker.advance(seconds)
    return tracker.heard_text()


async def test_a_question_is_transcribed_answered_and_spoken_in_full(
    store: Store, settings: Settings
) -> None:
    call = Call(store, settings, vad=ASKING, words=QUESTION, replies=[FakeReply(LONG_REPLY)])
    await call.start()
    await call.run(2.0)
    assert users(call) == ["what's the weather"]
    await call.run(6.0)
    assert call.tts.texts == SENTENCES  # one TTS request per sentence, in order
    total = sum(speech_seconds(s) for s in SENTENCES)
    assert played_seconds(call) == pytest.approx(total, abs=0.02)
    [bot] = bots(call)
    assert bot.content == LONG_REPLY and not bot.interrupted
    assert call.transport.clears == []
    assert call.session.state is SessionState.LISTENING
    await call.close()


async def test_a_last_sentence_voiced_with_no_audio_leaves_the_bot_done_speaking(
    store: Store, settings: Settings
) -> None:
    """A voice may end a sentence's stream without audio (a hosted voice closing early); the
    player waiting for more of the stretch must still finish, or the bot stays 'speaking' and
    the caller's next words count as a barge-in."""
    call = Call(store, settings, vad=ASKING, words=QUESTION, replies=[FakeReply(LONG_REPLY)])
    call.tts.mute = {SENTENCES[-1]: 6.0}  # ends after the sentence before it has played
    await call.start()
    await call.run(10.0)
    assert call.tts.texts == SENTENCES
    assert played_seconds(call) == pytest.approx(
        sum(speech_seconds(s) for s in SENTENCES[:-1]), abs=0.02
    )
    assert not call.pipeline.bot_active
    assert call.session.state is SessionState.LISTENING
    await call.close()


async def test_latency_stages_are_measured_from_the_end_of_speech(
    store: Store, settings: Settings
) -> None:
    call = Call(
        store, settings, vad=ASKING, words=QUESTION, replies=[FakeReply(LONG_REPLY, ttft=0.2)]
    )
    await call.start()
    await call.run(3.0)
    [latency] = call.turn_metrics()
    assert isinstance(latency, TurnLatency)
    assert latency.text == "what's the weather"
    assert latency.turn_id == next(t.id for t in call.session.turns if isinstance(t, UserTurn))
    # Speech ends at 1.3 s; the turn after 0.6 s of silence. STT began at the 0.2 s pause
    # and took 0.1 s, so the transcript is ready the moment the turn ends. The model started
    # speculatively on it at 0.3 s and had its first token at 0.5 s, held until the turn ended.
    assert latency.end_of_turn == pytest.approx(0.6, abs=0.021)
    assert latency.transcript == pytest.approx(latency.end_of_turn, abs=1e-6)
    assert latency.llm_first_token == pytest.approx(latency.transcript, abs=0.021)
    assert len(call.llm.requests) == 1
    assert latency.first_audio == pytest.approx(latency.llm_first_token + 0.05, abs=0.021)
    assert latency.first_audio <= latency.voice_to_voice <= latency.first_audio + 0.021
    assert len(call.stt.calls) == 1  # the early transcript was the final one
    summary = await call.pipeline.close()
    assert summary.turns == 1
    assert summary.stages["voice_to_voice"].p50 == latency.voice_to_voice
    await call.session.close()


async def test_without_the_early_transcript_stt_starts_when_the_turn_ends(
    store: Store, settings: Settings
) -> None:
    call = Call(
        store,
        settings,
        vad=ASKING,
        words=QUESTION,
        replies=[FakeReply("Sunny.")],
        options=VoiceOptions(prefetch_after=5.0),
    )
    await call.start()
    await call.run(3.0)
    [latency] = call.turn_metrics()
    assert latency.transcript == pytest.approx(latency.end_of_turn + 0.1, abs=0.021)
    await call.close()


async def test_a_pause_shorter_than_the_end_of_turn_silence_does_not_split_the_turn(
    store: Store, settings: Settings
) -> None:
    words = [(0.35, 0.8, "book"), (0.8, 1.2, "a"), (1.75, 2.2, "table")]
    vad = [(0.0, 0.3), (0.9, 1.0), (0.0, 0.4), (0.9, 0.6)]  # speech, a 0.4 s pause, speech
    guess = FakeReply("Booking it now.", token_delay=0.3)  # the guess made at the pause
    call = Call(store, settings, vad=vad, words=words, replies=[guess, FakeReply("Sure.")])
    await call.start()
    await call.run(4.0)
    assert users(call) == ["book a table"]
    # One reply: the guess made on "book a" at the pause was dropped when the caller went on.
    assert [r.messages[-1].content for r in call.llm.requests] == ["book a", "book a table"]
    assert [b.content for b in bots(call)] == ["Sure."]
    assert call.tts.texts == ["Sure."]
    await call.close()


async def barging_call(store: Store, settings: Settings, **kwargs: object) -> Call:
    """The question, then a reply streamed slowly enough that the model is still writing
    when the caller speaks again at 3.0 s (replies are heard from about 2.0 s)."""
    kwargs.setdefault("replies", [FakeReply(LONG_REPLY, token_delay=0.15)])
    kwargs.setdefault("vad", [*ASKING, (0.0, 1.7), (0.9, 1.0)])
    call = Call(store, settings, **kwargs)  # type: ignore[arg-type]
    await call.start()
    await call.run(3.0)
    assert call.transport.sent, "the bot is speaking when the caller cuts in"
    return call


async def test_speech_during_bot_speech_stops_output_and_truncates_the_turn(
    store: Store, settings: Settings
) -> None:
    words = [*QUESTION, (3.05, 3.3, "stop"), (3.3, 3.7, "please")]
    call = await barging_call(store, settings, words=words)
    await call.run(0.22)  # speech from 3.0 s is confirmed after min_speech (0.2 s)
    paused_at = call.clock.now()
    await call.run(0.6)
    # Output stopped within a frame of the onset being confirmed...
    assert not call.transport.sent_between(paused_at + 0.02, 99)
    # ... and once "stop" was heard (0.5 s of speech, 0.1 s STT) the channel was cleared.
    [cleared] = call.transport.clears
    assert cleared == pytest.approx(3.6, abs=0.05)
    assert call.llm.cancelled == 1  # the model was still writing; its stream was cancelled
    [bot] = bots(call)
    assert bot.interrupted
    assert bot.content == heard(SENTENCES, played_seconds(call))
    assert 0 < len(bot.content) < len(SENTENCES[0]) + len(SENTENCES[1])
    await call.run(1.5)  # the caller finishes; what they said is answered
    assert users(call) == ["what's the weather", "stop please"]
    await call.close()


async def test_a_150_ms_click_does_not_interrupt(store: Store, settings: Settings) -> None:
    call = await barging_call(
        store, settings, words=QUESTION, vad=[*ASKING, (0.0, 1.7), (0.9, 0.15)]
    )
    sent_before = len(call.transport.sent)
    await call.run(0.3)
    assert len(call.transport.sent) == sent_before + 15  # not a frame missed
    await call.run(5.0)
    [bot] = bots(call)
    assert bot.content == LONG_REPLY and not bot.interrupted
    assert call.transport.clears == [] and users(call) == ["what's the weather"]
    await call.close()


async def test_a_backchannel_pauses_the_bot_briefly_then_it_resumes(
    store: Store, settings: Settings
) -> None:
    words = [*QUESTION, (3.05, 3.55, "uh-huh")]
    call = await barging_call(store, settings, words=words, vad=[*ASKING, (0.0, 1.7), (0.9, 0.6)])
    resumed: list[str] = []
    call.session.on("barge_in_resumed", lambda heard, verdict: resumed.append(heard))
    await call.run(6.0)
    assert resumed == ["uh-huh"]  # said once, for metrics and observers
    [bot] = bots(call)
    assert bot.content == LONG_REPLY and not bot.interrupted
    assert call.transport.clears == []
    total = sum(speech_seconds(s) for s in SENTENCES)
    assert played_seconds(call) == pytest.approx(total, abs=0.02)  # every word still played
    assert users(call) == ["what's the weather"]  # "uh-huh" is not a turn
    # The bot went quiet while it listened, and carried on when it heard only "uh-huh".
    gaps = [b.at - a.at for a, b in pairwise(call.transport.sent)]
    assert 0.3 < max(gaps) < 1.2
    await call.close()


async def test_a_false_interruption_without_words_lets_the_bot_resume(
    store: Store, settings: Settings
) -> None:
    call = await barging_call(store, settings, words=QUESTION)  # 1 s of "speech", no words
    await call.run(6.0)
    [bot] = bots(call)
    assert bot.content == LONG_REPLY and not bot.interrupted
    assert call.transport.clears == [] and users(call) == ["what's the weather"]
    await call.close()


async def test_a_non_interruptible_agent_answers_after_it_finishes(
    store: Store, settings: Settings
) -> None:
    words = [*QUESTION, (3.05, 3.3, "and"), (3.3, 3.9, "tomorrow")]
    call = await barging_call(
        store,
        settings,
        words=words,
        turn={"interruptible": False},
        replies=[FakeReply(LONG_REPLY, token_delay=0.15), FakeReply("Also sunny.")],
    )
    await call.run(2.0)
    assert call.transport.clears == []
    assert len(call.llm.requests) == 1  # not answered while the bot talks
    await call.run(6.0)
    first, second = bots(call)
    assert first.content == LONG_REPLY and not first.interrupted
    assert second.content == "Also sunny."
    assert users(call) == ["what's the weather", "and tomorrow"]
    await call.close()


async def test_tool_results_survive_an_interruption(store: Store, settings: Settings) -> None:
    @tool
    def get_weather(city: str) -> str:
        """Weather for a city.

        Args:
            city: The city.
        """
        return f"{city}: sunny"

    words = [*QUESTION, (3.05, 3.3, "wait"), (3.3, 3.7, "actually")]
    call = await barging_call(
        store,
        settings,
        words=words,
        tools=[get_weather],
        replies=[
            FakeReply(tool_calls=[FakeToolCall("get_weather", {"city": "Paris"})]),
            FakeReply(LONG_REPLY, token_delay=0.15),
            FakeReply("Sure, go ahead."),
        ],
    )
    await call.run(2.0)
    filler, bot, answer = bots(call)
    assert filler.content == "One moment." and not filler.interrupted  # said as the call began
    assert answer.content == "Sure, go ahead."
    assert bot.interrupted and len(bot.content) < len(LONG_REPLY)
    [call_turn] = [t for t in call.session.turns if isinstance(t, ToolCallTurn)]
    [result] = [t for t in call.session.turns if isinstance(t, ToolResultTurn)]
    assert call_turn.name == "get_weather" and result.content == "Paris: sunny"
    assert not result.is_error
    await call.close()


async def test_min_interruption_words_turns_a_short_remark_into_a_deferred_question(
    store: Store, settings: Settings
) -> None:
    words = [*QUESTION, (3.05, 3.6, "really")]
    call = await barging_call(
        store,
        settings,
        words=words,
        turn={"min_interruption_words": 2},
        replies=[FakeReply(LONG_REPLY, token_delay=0.15), FakeReply("Yes, really.")],
    )
    await call.run(8.0)
    first, second = bots(call)
    assert first.content == LONG_REPLY and not first.interrupted
    assert second.content == "Yes, really."
    assert call.transport.clears == []
    await call.close()
