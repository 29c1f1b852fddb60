"""The smart-turn v3 strategy: its decisions on scripted verdicts and words, and the real model
on synthesized callers (espeak-ng)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from voxline.audio.resample import resample
from voxline.audio.smart_turn import (
    SAMPLE_RATE,
    SmartTurnEndOfTurn,
    log_mel,
    sounds_unfinished,
    still_dictating,
)
from voxline.audio.turn_taking import SpeechEnded, TurnOptions
from voxline.providers.stt.base import Transcript
from voxline.voice.listener import Listener

from ..voice.speech import espeak
from .scripted_vad import ScriptedVAD


def _model_or_skip() -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from voxline.audio.smart_turn import SmartTurnModel, SmartTurnUnavailable

    try:
        SmartTurnModel.shared()
    except SmartTurnUnavailable as exc:
        pytest.skip(f"the smart-turn extra is not installed: {exc}")


def _turn(text: str, folder: Path) -> np.ndarray:
    """The utterance at 16 kHz with 0.2 s of trailing silence, as when a pause asks."""
    voice = espeak(text, folder)
    pcm = resample(voice.pcm, voice.sample_rate, 16_000)
    return pcm[: len(pcm) - 16_000 * 3 // 2 + 3_200]


class _Scripted:
    """A stand-in for the ONNX session with a fixed verdict: the decisions below are about
    what the strategy does with a verdict and words, not about the model."""

    def __init__(self, probability: float) -> None:
        self.probability = probability
        self.heard: list[int] = []

    def predict(self, pcm: np.ndarray) -> float:
        self.heard.append(len(pcm))
        return self.probability


def _strategy(
    probability: float, seconds: float = 3.0, **options: float
) -> tuple[SmartTurnEndOfTurn, _Scripted]:
    """A strategy over a turn of `seconds` of audio (pre-roll, speech and the pause so far)."""
    model = _Scripted(probability)
    strategy = SmartTurnEndOfTurn(model=lambda: model, **options)  # type: ignore[arg-type,return-value]
    pcm = np.zeros(round(seconds * SAMPLE_RATE), np.int16)
    strategy.listen(lambda: pcm)
    strategy.reset()
    return strategy, model


def _until_verdict(strategy: SmartTurnEndOfTurn, silence: float) -> bool:
    """`is_complete(silence)` once the model's answer is in (it runs on a worker thread)."""
    deadline = time.monotonic() + 5
    complete = strategy.is_complete(silence)
    while not strategy.decisions and time.monotonic() < deadline:
        time.sleep(0.005)
        silence += 1e-6  # the same pause, a moment later
        complete = strategy.is_complete(silence)
    assert strategy.decisions, "the model never answered"
    return complete


def test_features_have_the_models_shape() -> None:
    features = log_mel(np.zeros(16_000, np.int16))
    assert features.shape == (80, 800)
    assert features.dtype == np.float32


def test_a_complete_voice_with_fresh_words_ends_at_the_short_silence() -> None:
    strategy, model = _strategy(0.9, seconds=2.5)
    strategy.update_partial("What is the capital of", covers=1.8)  # 0.5 s unheard
    assert not strategy.is_complete(0.1)  # before `ask_after` the model is not asked
    assert not model.heard
    assert _until_verdict(strategy, 0.2)
    assert model.heard == [2.5 * SAMPLE_RATE]  # the whole turn so far went to the model


def test_a_number_being_read_out_keeps_the_turn_open_until_the_words_say_it_ended() -> None:
    strategy, _ = _strategy(0.96)  # the model calls read-out digits finished
    strategy.update_partial("My number is four one", covers=2.2)
    assert not _until_verdict(strategy, 0.2)
    strategy.update_transcript("My number is four one five")
    assert not strategy.is_complete(0.6)
    assert not strategy.is_complete(1.9)
    assert strategy.is_complete(2.0)  # the maximum bounds the wait


def test_the_pause_words_end_a_number_that_is_complete() -> None:
    strategy, _ = _strategy(0.96, seconds=5.0)
    strategy.update_partial("My number is four one five five", covers=4.0)
    assert not _until_verdict(strategy, 0.2)
    strategy.update_transcript("My number is 415 555 0199.")
    assert strategy.is_complete(0.45)


def test_stale_words_wait_for_the_pause_words() -> None:
    strategy, _ = _strategy(0.96, seconds=2.4)
    strategy.update_partial("My", covers=0.8)  # 1.4 s of speech unheard: too stale to judge
    assert not _until_verdict(strategy, 0.2)
    assert not strategy.is_complete(1.5)
    strategy.update_transcript("What is the capital of France?")
    assert strategy.is_complete(1.55)


def test_a_short_turn_without_words_is_the_models_to_judge() -> None:
    strategy, _ = _strategy(0.9, seconds=0.9)  # 0.3 s pre-roll, "Yes.", 0.2 s of pause
    assert _until_verdict(strategy, 0.2)


def test_an_incomplete_voice_waits_for_the_maximum_whatever_the_words() -> None:
    strategy, _ = _strategy(0.05)
    assert not _until_verdict(strategy, 0.2)
    strategy.update_transcript("I'd like apples, pears and")
    assert not strategy.is_complete(1.99)
    assert strategy.is_complete(2.0)


def test_words_veto_a_complete_sounding_voice() -> None:
    strategy, _ = _strategy(0.99)
    strategy.update_transcript("Please send it to my email, which is john dot smith at")
    assert not _until_verdict(strategy, 0.2)
    assert not strategy.is_complete(1.0)
    assert strategy.is_complete(2.0)


def test_speech_after_a_pause_forgets_its_verdict_and_keeps_its_words() -> None:
    strategy, model = _strategy(0.2)
    assert not _until_verdict(strategy, 0.3)
    strategy.update_transcript("I'd like to book a table")
    assert not strategy.is_complete(0.032)  # the caller spoke again: a new pause
    model.probability = 0.9
    assert _until_verdict_again(strategy, 0.2)  # the old words do not hold it open
    assert strategy.decisions == [0.2, 0.9]
    assert strategy.words == "I'd like to book a table"  # kept as the turn's beginning


def test_words_of_an_earlier_pause_that_show_a_number_hold_the_next_one() -> None:
    strategy, model = _strategy(0.2)
    assert not _until_verdict(strategy, 0.3)
    strategy.update_transcript("My number is four one five")
    assert not strategy.is_complete(0.032)
    model.probability = 0.9
    assert not _until_verdict_again(strategy, 0.2)


def _until_verdict_again(strategy: SmartTurnEndOfTurn, silence: float) -> bool:
    before = len(strategy.decisions)
    deadline = time.monotonic() + 5
    while len(strategy.decisions) == before and time.monotonic() < deadline:
        strategy.is_complete(silence)
        silence += 1e-6
        time.sleep(0.005)
    return strategy.is_complete(silence)


def test_wait_for_words_holds_a_complete_verdict_until_the_words_or_the_silence_rule() -> None:
    strategy, _ = _strategy(0.9, wait_for_words=True)
    strategy.update_partial("What is the capital of", covers=2.0)
    assert not _until_verdict(strategy, 0.2)
    assert strategy.is_complete(0.6)


def test_a_failing_model_falls_back_to_the_silence_rule() -> None:
    def broken() -> object:
        raise RuntimeError("no model")

    strategy = SmartTurnEndOfTurn(model=broken)  # type: ignore[arg-type]
    strategy.listen(lambda: np.zeros(SAMPLE_RATE, np.int16))
    assert not strategy.is_complete(0.5)  # asks; no verdict can come
    silence, deadline = 0.6, time.monotonic() + 5
    while not strategy.is_complete(silence) and time.monotonic() < deadline:
        silence += 1e-6  # the silence rule's time, far from the 2 s maximum
        time.sleep(0.005)
    assert strategy.is_complete(silence)
    assert not strategy.decisions


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        SmartTurnEndOfTurn(model=lambda: _Scripted(1.0), ask_after=0.7)  # type: ignore[arg-type,return-value]


def test_unfinished_transcripts() -> None:
    assert sounds_unfinished("My number is four one five")
    assert sounds_unfinished("I'd like apples, pears and")
    assert sounds_unfinished("My number is 415.")
    assert sounds_unfinished("The account number is 7.7.")
    assert sounds_unfinished("Please send it to my email, which is www.don.smith.")
    assert not sounds_unfinished("My number is 415 555 0199.")
    assert not sounds_unfinished("What is the capital of France?")
    assert not sounds_unfinished("My email is john.smith@example.com.")
    assert not sounds_unfinished("My email is john at example dot com")
    assert not sounds_unfinished("Can you email me the receipt?")


def test_dictation_in_the_words_of_a_turns_beginning() -> None:
    assert still_dictating("My number")
    assert still_dictating("My number is")
    assert still_dictating("The account number is 77")
    assert still_dictating("four one")
    assert still_dictating("Please send it to my email, which is john")
    assert still_dictating("The account number to 7.7.")  # Whisper on "is seven seven"
    assert still_dictating("Please send it to my email, which")
    assert still_dictating("The account number is 7 seconds.")
    assert not still_dictating("What is the capital of")  # a prefix may end on "of"
    assert not still_dictating("I'd like apples, pears and")
    assert not still_dictating("My number is 415 555 0199")
    assert not still_dictating("Can you email me the receipt for")
    assert not still_dictating("What is my account number and when was it")
    assert not still_dictating("")


@pytest.mark.parametrize(
    ("text", "finished"),
    [("I'd like apples, pears and", False), ("What's the weather in Paris tomorrow?", True)],
)
def test_the_model_hears_whether_a_turn_is_finished(
    text: str, finished: bool, tmp_path: Path
) -> None:
    _model_or_skip()
    from voxline.audio.smart_turn import SmartTurnModel

    probability = SmartTurnModel.shared().predict(_turn(text, tmp_path))
    assert (probability >= 0.5) is finished, probability


def test_the_real_model_ends_a_complete_question_before_the_silence_rule(tmp_path: Path) -> None:
    _model_or_skip()
    pcm = _turn("What is the capital of France?", tmp_path)
    strategy = SmartTurnEndOfTurn()
    strategy.listen(lambda: pcm)
    strategy.reset()
    strategy.update_partial("What is the capital of", covers=len(pcm) / SAMPLE_RATE - 0.7)
    assert _until_verdict(strategy, 0.2)
    assert strategy.decisions[0] >= 0.5


def test_an_unfinished_voice_is_asked_again_when_the_words_sound_finished() -> None:
    strategy, model = _strategy(0.2)
    assert not _until_verdict(strategy, 0.2)
    strategy.update_transcript("My number is 415 555 0199.")
    assert not strategy.is_complete(0.5)
    model.probability = 0.9  # more of the pause heard: the voice now sounds finished
    assert _until_verdict_again(strategy, 0.6)
    assert strategy.decisions == [0.2, 0.9]
    assert len(model.heard) == 2


def test_unfinished_words_are_not_asked_again() -> None:
    strategy, model = _strategy(0.2)
    assert not _until_verdict(strategy, 0.2)
    strategy.update_transcript("I'd like apples, pears and")
    assert not strategy.is_complete(0.6)
    assert not strategy.is_complete(1.0)
    assert len(model.heard) == 1


class _ScriptedSTT:
    """Words by how much of the turn was heard: the listener's timing is under test."""

    sample_rate = SAMPLE_RATE

    def __init__(self, words: list[tuple[float, str]]) -> None:
        self.words = words  # (seconds of audio at least, text), in order
        self.heard: list[float] = []

    async def transcribe(self, pcm: np.ndarray, *, language: str | None = None) -> Transcript:
        seconds = len(pcm) / SAMPLE_RATE
        self.heard.append(seconds)
        text = [text for least, text in self.words if seconds >= least][-1]
        return Transcript(text=text, audio_duration=seconds)


async def _listen(
    strategy: SmartTurnEndOfTurn, stt: _ScriptedSTT, speech: float
) -> tuple[SpeechEnded, Listener]:
    """`speech` seconds of voice then silence, through a Listener with a scripted VAD."""
    chunk = 512
    voiced = round(speech * SAMPLE_RATE / chunk)
    vad = ScriptedVAD([1.0] * voiced + [0.0] * 200, chunk_samples=chunk)
    listener = Listener(
        vad,  # type: ignore[arg-type]
        stt,  # type: ignore[arg-type]
        input_rate=SAMPLE_RATE,
        options=TurnOptions(end_of_turn_silence=0.6),
        end_of_turn=strategy,
    )
    frame = np.zeros(320, np.int16)
    for _ in range(round(6 * SAMPLE_RATE / len(frame))):
        for event in listener.push(frame):
            if isinstance(event, SpeechEnded):
                listener.close()
                return event, listener
        await asyncio.sleep(0.003)  # the model's thread and the transcriptions keep up
    raise AssertionError("the turn never ended")


async def test_the_listener_feeds_words_while_the_caller_talks_and_a_number_waits() -> None:
    strategy, _ = _strategy(0.96)
    stt = _ScriptedSTT([(0.0, "My"), (1.2, "My number is"), (2.2, "My number is four one five")])
    ended, _ = await _listen(strategy, stt, speech=2.0)
    assert ended.t - ended.speech_end >= 1.95  # held to the 2 s maximum, not cut at 0.6
    while_speaking = [seconds for seconds in stt.heard if seconds < 2.3]
    assert len(while_speaking) >= 3  # every 0.5 s of speech, one at a time
    assert strategy.words == "My number is four one five"


async def test_the_listener_ends_a_complete_question_at_the_models_verdict() -> None:
    strategy, _ = _strategy(0.9)
    stt = _ScriptedSTT([(0.0, "What is"), (1.0, "What is the capital of France?")])
    ended, _ = await _listen(strategy, stt, speech=1.6)
    assert ended.t - ended.speech_end < 0.6
