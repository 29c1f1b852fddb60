"""The speech-to-text protocols: 16 kHz mono PCM16 in, text with timing out (`STT`, one
utterance at a time), and streaming recognizers that hear a call as it happens
(`StreamingSTT`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

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


# -- streaming recognizers -------------------------------------------------------------------
# A hosted recognizer hears the call as it happens, so its words are ready when the caller stops
# (no transcription after the turn), its interim guesses can decide a barge-in while the caller
# is still talking, and some know better than a silence timer when a turn is over. The types
# below are what every streaming provider is reduced to; `voxline.providers.stt.live` drives
# them for a call (reconnects, fallback, turn boundaries).

AudioEncoding = Literal["linear16", "mulaw"]


@dataclass(frozen=True)
class AudioFormat:
    """What the bytes sent to a stream are: PCM16 little-endian or G.711 µ-law, mono."""

    encoding: AudioEncoding
    sample_rate: int

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * (2 if self.encoding == "linear16" else 1)

    @property
    def silence_byte(self) -> int:
        """The byte that fills silence (µ-law's zero is 0xFF)."""
        return 0 if self.encoding == "linear16" else 0xFF


LINEAR16_16K = AudioFormat("linear16", 16000)
MULAW_8K = AudioFormat("mulaw", 8000)  # Twilio Media Streams: sent on as it arrives


class SttEventKind(StrEnum):
    SPEECH_STARTED = "speech_started"
    INTERIM = "interim"
    """A guess at the words after the last final one; the next interim or final replaces it.
    With providers that report the whole turn so far (Flux, AssemblyAI) it is all of it."""
    FINAL = "final"
    """Words that will not change, appended to the turn."""
    EAGER_END_OF_TURN = "eager_end_of_turn"
    """The provider thinks the caller is probably done (Flux `EagerEndOfTurn`)."""
    TURN_RESUMED = "turn_resumed"
    """...and then heard more (Flux `TurnResumed`)."""
    END_OF_TURN = "end_of_turn"
    """The provider says the caller's turn is over (Deepgram `speech_final`/`UtteranceEnd`,
    Flux `EndOfTurn`, AssemblyAI `end_of_turn`); every word of it has been sent as final."""
    FINALIZED = "finalized"
    """Everything sent before `finalize()` has been answered (Deepgram `from_finalize`)."""


@dataclass(frozen=True)
class SttEvent:
    kind: SttEventKind
    text: str = ""
    start: float = 0.0  # seconds into the audio sent on this stream
    end: float = 0.0


@dataclass(frozen=True)
class StreamOptions:
    format: AudioFormat
    language: str | None = None
    end_of_turn_silence: float | None = None
    """Silence the provider's own endpointing waits for; None: the provider's default."""
    hints: tuple[str, ...] = ()  # words to listen for (key terms), where the provider takes them


class SttStreamError(Exception):
    """A stream failed: it could not connect, the provider reported an error, or the socket
    dropped. `retryable` is False when trying again cannot help (a refused key)."""

    def __init__(self, message: str, *, provider: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable


@runtime_checkable
class RecognitionStream(Protocol):
    """One open connection to a streaming recognizer.

    `send`, `finalize` and `keepalive` never block: they queue for the stream's writer, so the
    audio hot path pays a list append. `events` yields what the provider says until the stream
    is closed, and raises `SttStreamError` if it fails instead.
    """

    format: AudioFormat

    def send(self, audio: bytes) -> None: ...

    def finalize(self) -> None:
        """Ask for final words for all audio sent so far (Deepgram `Finalize`, Flux
        `ForceEndTurn`, AssemblyAI `ForceEndpoint`); answered by FINALIZED or END_OF_TURN."""
        ...

    def keepalive(self) -> None:
        """Keep an idle stream open (sent by the stream itself when no audio flows)."""
        ...

    def events(self) -> AsyncIterator[SttEvent]: ...

    async def close(self) -> None:
        """The provider's close handshake (Deepgram `CloseStream`, AssemblyAI `Terminate`):
        the last words are still delivered to `events`, then the socket closes. Bounded."""
        ...

    def abort(self) -> None:
        """Drop the connection at once, no handshake."""
        ...


@runtime_checkable
class StreamingSTT(STT, Protocol):
    """A recognizer that can also listen to a call as it happens. Its `transcribe` still works
    (one short stream per utterance), so anything that wants batch transcription can use it."""

    def accepts(self, audio: AudioFormat) -> bool:
        """Whether the stream takes this format as is (µ-law 8 kHz from a phone, unconverted)."""
        ...

    async def open_stream(self, options: StreamOptions) -> RecognitionStream:
        """Connect; raises `SttStreamError` when the provider cannot be reached or refuses."""
        ...
