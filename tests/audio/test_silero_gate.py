"""The gate on real speech: espeak-ng utterances through the real Silero VAD."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from voxline.audio.resample import resample
from voxline.audio.turn_taking import GateEvent, SpeechEnded, SpeechGate, SpeechStarted
from voxline.audio.wav import read_wav
from voxline.providers.llm.base import ConfigurationError
from voxline.providers.vad.base import VAD

pytestmark = pytest.mark.slow

RATE = 16000


@pytest.fixture(scope="module")
def silero_vad() -> VAD:
    module = pytest.importorskip(
        "voxline.providers.vad.silero", reason="the Silero VAD provider is not installed"
    )
    try:
        vad: VAD = module.create_silero_vad()
    except ConfigurationError as exc:
        pytest.skip(f"the Silero model is not available: {exc}")
    return vad


def speak(text: str, tmp_path: Path) -> npt.NDArray[np.int16]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    frame = read_wav(path)
    return resample(frame.pcm, frame.sample_rate, RATE)


def room_noise(seconds: float, seed: int) -> npt.NDArray[np.int16]:
    return (np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * 30).astype(
        np.int16
    )


def voiced_span(pcm: npt.NDArray[np.int16], offset: float) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(pcm) > 500)
    return offset + loud[0] / RATE, offset + (loud[-1] + 1) / RATE


def feed(gate: SpeechGate, audio: npt.NDArray[np.int16]) -> list[GateEvent]:
    events: list[GateEvent] = []
    for start in range(0, len(audio), 320):  # 20 ms frames, as from a phone call
        events += gate.push(audio[start : start + 320])
    return events


def test_real_speech_gives_one_turn_per_utterance_with_accurate_bounds(
    silero_vad: VAD, tmp_path: Path
) -> None:
    first = speak("What's the weather in Paris tomorrow? I would like to know, please.", tmp_path)
    second = speak("And in London?", tmp_path)
    lead, gap = 1.0, 1.5
    audio = np.concatenate(
        [room_noise(lead, 1), first, room_noise(gap, 2), second, room_noise(1.5, 3)]
    )
    spans = [
        voiced_span(first, lead),
        voiced_span(second, lead + len(first) / RATE + gap),
    ]
    gate = SpeechGate(silero_vad)
    events = feed(gate, audio)

    assert [type(event).__name__ for event in events] == ["SpeechStarted", "SpeechEnded"] * 2
    ended = [event for event in events if isinstance(event, SpeechEnded)]
    started = [event for event in events if isinstance(event, SpeechStarted)]
    for (onset, offset), start, end in zip(spans, started, ended, strict=True):
        assert abs(start.t - onset) <= 0.1
        assert abs(end.speech_end - offset) <= 0.2
        assert 0.6 <= end.t - end.speech_end <= 0.6 + 512 / RATE
        assert end.audio.timestamp == pytest.approx(start.t - 0.3)
        assert end.reason == "silence"
