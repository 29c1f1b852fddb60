"""The text-to-speech protocol: text in, a stream of PCM16 chunks that know what they say."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class AudioChunk:
    """Synthesised audio plus the text it speaks, so playback position maps back to words."""

    pcm: npt.NDArray[np.int16]
    sample_rate: int
    text: str = ""

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate


@runtime_checkable
class TTS(Protocol):
    """Streams audio for `text`, first chunk as early as possible (sentence by sentence)."""

    label: str
    sample_rate: int  # the native output rate; resampling happens once, at the channel edge

    def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]: ...
