"""The smart-turn v3 strategy on the real model and synthesized callers (espeak-ng)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from voxline.audio.resample import resample
from voxline.audio.smart_turn import SmartTurnEndOfTurn, log_mel, sounds_unfinished

from ..voice.speech import espeak

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def _model_or_skip() -> None:
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


def test_features_have_the_models_shape() -> None:
    features = log_mel(np.zeros(16_000, np.int16))
    assert features.shape == (80, 800)
    assert features.dtype == np.float32


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


def test_a_complete_question_ends_the_turn_before_the_silence_rule(tmp_path: Path) -> None:
    _model_or_skip()
    pcm = _turn("What is the capital of France?", tmp_path)
    strategy = SmartTurnEndOfTurn(wait_for_words=False)
    strategy.listen(lambda: pcm)
    strategy.reset()
    silence, deadline = 0.0, time.monotonic() + 5
    while not strategy.is_complete(silence) and time.monotonic() < deadline:
        silence += 0.032 if silence < 0.3 else 0.0001  # a growing pause, kept under 0.6 s
        time.sleep(0.01)
    assert silence < 0.6
    assert strategy.is_complete(silence + 0.0001)
    assert strategy.decisions and strategy.decisions[0] >= 0.5


def test_words_veto_a_complete_sounding_voice() -> None:
    strategy = SmartTurnEndOfTurn(model=lambda: _Sure())  # type: ignore[arg-type,return-value]
    strategy.listen(lambda: np.zeros(16_000, np.int16))
    strategy.is_complete(0.2)
    strategy.update_transcript("My number is 415")
    silence, deadline = 0.2, time.monotonic() + 5
    while not strategy.decisions and time.monotonic() < deadline:
        silence += 0.0001
        assert not strategy.is_complete(silence)
        time.sleep(0.01)
    assert strategy.decisions == [0.99]
    assert not strategy.is_complete(1.0)
    assert strategy.is_complete(2.0)  # the maximum bounds the wait


class _Sure:
    def predict(self, pcm: np.ndarray) -> float:
        return 0.99


def test_unfinished_transcripts() -> None:
    assert sounds_unfinished("My number is four one five")
    assert sounds_unfinished("I'd like apples, pears and")
    assert sounds_unfinished("My number is 415.")
    assert not sounds_unfinished("My number is 415 555 0199.")
    assert not sounds_unfinished("What is the capital of France?")
