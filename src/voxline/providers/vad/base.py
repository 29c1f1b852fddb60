"""The voice-activity protocol: a shared model, and a cheap stream per caller holding its state."""

from __future__ import annotations

from collections.abc import Callable
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


@runtime_checkable
class BatchedVADStream(Protocol):
    """Per-caller state whose answers come through a callback, in order, one per `submit`;
    the model may batch them with other callers' windows (`voxline.providers.vad.batch`)."""

    @property
    def pending(self) -> int:
        """Windows submitted and not answered yet."""
        ...

    def submit(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> None: ...

    def settle(self) -> None:
        """Answer every waiting window now."""
        ...

    def reset(self) -> None:
        """Fresh state; waiting windows are dropped unanswered."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class BatchingVAD(Protocol):
    """A VAD that can also answer through callbacks, batching callers (Silero)."""

    def batched_stream(
        self, on_probability: Callable[[float], None]
    ) -> BatchedVADStream | None: ...
