"""The speech-to-text protocol: 16 kHz mono PCM16 in, text with timing out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

PCM16 = npt.NDArray[np.int16]


@dataclass(frozen=True)
class TranscriptSegment:
    text: str
    start: float  # seconds from the start of the audio given
    end: float


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None = None
    segments: list[TranscriptSegment] = field(default_factory=list)
    audio_duration: float = 0.0


@runtime_checkable
class STT(Protocol):
    """Transcribes one utterance. Implementations run CPU work off the event loop."""

    label: str
    sample_rate: int  # the rate `transcribe` expects (16000 for every built-in provider)

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript: ...
