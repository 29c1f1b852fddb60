"""A VAD that replays a list of probabilities: it tests the turn-taking logic, not a model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

RATE = 16000


class ScriptedVADStream:
    def __init__(self, probabilities: Sequence[float], chunk_samples: int) -> None:
        self._probabilities = list(probabilities)
        self._chunk_samples = chunk_samples
        self.calls = 0
        self.resets = 0

    def process(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> float:
        assert len(chunk) == self._chunk_samples, f"got {len(chunk)} samples"
        index = self.calls
        self.calls += 1
        return self._probabilities[index] if index < len(self._probabilities) else 0.0

    def reset(self) -> None:
        self.resets += 1


class ScriptedVAD:
    label = "scripted"
    sample_rate = RATE

    def __init__(self, probabilities: Sequence[float], chunk_samples: int = 160) -> None:
        self.probabilities = probabilities
        self.chunk_samples = chunk_samples
        self.streams: list[ScriptedVADStream] = []

    def stream(self) -> ScriptedVADStream:
        stream = ScriptedVADStream(self.probabilities, self.chunk_samples)
        self.streams.append(stream)
        return stream


def script(*segments: tuple[float, float], chunk_samples: int = 160) -> list[float]:
    """(probability, seconds) segments as one probability per VAD chunk."""
    out: list[float] = []
    for probability, seconds in segments:
        out += [probability] * round(seconds * RATE / chunk_samples)
    return out


def marked_audio(chunks: int, chunk_samples: int = 160) -> npt.NDArray[np.int16]:
    """Audio whose every sample holds the index of its VAD chunk, so a test can tell exactly
    which stretch of input an utterance's audio came from."""
    return np.repeat(np.arange(chunks, dtype=np.int16), chunk_samples)
