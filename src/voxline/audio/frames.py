"""The unit of audio that moves through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxline.audio.codecs import pcm16_from_bytes, pcm16_to_bytes


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """Mono PCM16 samples with their rate and where they sit in their stream.

    `pcm` is usually a view (into a network payload, a decoder table output or a larger buffer):
    frames are passed along, never copied, so a consumer that keeps one past the current call and
    cannot be sure its owner will not reuse the memory should `copy()` it. `timestamp` is seconds
    on the producing stream's own clock (audio time), which keeps frames comparable without any
    wall-clock lookups on the hot path.
    """

    pcm: npt.NDArray[np.int16]
    sample_rate: int
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        if self.pcm.dtype != np.int16 or self.pcm.ndim != 1:
            raise ValueError(
                f"AudioFrame needs 1-D int16 samples, got {self.pcm.dtype} with shape "
                f"{self.pcm.shape}"
            )
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, sample_rate: int, timestamp: float = 0.0
    ) -> AudioFrame:
        """Wrap little-endian PCM16 bytes without copying them."""
        return cls(pcm16_from_bytes(data), sample_rate, timestamp)

    @property
    def num_samples(self) -> int:
        return len(self.pcm)

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate

    @property
    def end(self) -> float:
        """The stream time just after the last sample."""
        return self.timestamp + self.duration

    def slice(self, start: int, stop: int | None = None) -> AudioFrame:
        """A view of samples `[start, stop)` whose timestamp follows them."""
        first = slice(start, stop).indices(self.pcm.shape[0])[0]
        return AudioFrame(
            self.pcm[start:stop], self.sample_rate, self.timestamp + first / self.sample_rate
        )

    def copy(self) -> AudioFrame:
        return AudioFrame(self.pcm.copy(), self.sample_rate, self.timestamp)

    def to_bytes(self) -> bytes:
        return pcm16_to_bytes(self.pcm)
