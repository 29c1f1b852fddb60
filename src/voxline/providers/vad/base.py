"""The voice-activity protocol: a shared model, and a cheap stream per caller holding its state."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@runtime_checkable
class VADStream(Protocol):
    """Per-caller recurrent state. `process` takes exactly `chunk_samples` samples of 16 kHz audio
    (int16 or float32 in [-1, 1]) and returns the probability that it holds speech."""

    def process(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> float: ...

    def reset(self) -> None: ...


@runtime_checkable
class VAD(Protocol):
    label: str
    sample_rate: int  # 16000
    chunk_samples: int  # e.g. 512 (32 ms) for Silero

    def stream(self) -> VADStream: ...
