"""The text-to-speech protocol: text in, a stream of PCM16 chunks that know what they say.

The protocol itself carries PCM16 only. Hosted voices add two optional things on top, without
changing it for local ones: `ChannelAware.for_channel` (synthesise at the channel's rate or in
its codec, report failures recovered from) and `TTSError` (what a provider raises when it fails,
so a fallback chain can tell a provider failure from a bug)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
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
    exact: bool = False
    """`text` is exactly what this chunk speaks, even when empty (a streamed voice whose first
    pieces finish no word yet). Otherwise an empty `text` means the provider does not say, and
    the speaker credits the chunk with the rest of its sentence."""

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate


@runtime_checkable
class TTS(Protocol):
    """Streams audio for `text`, first chunk as early as possible (sentence by sentence)."""

    label: str
    sample_rate: int  # the native output rate; resampling happens once, at the channel edge

    def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]: ...


class TTSError(Exception):
    """A hosted voice failed: refused the request, dropped the socket, went quiet. The speaker
    logs it and reports it on the session bus; a fallback chain moves on to the next voice."""

    def __init__(self, message: str, *, provider: str) -> None:
        super().__init__(message)
        self.provider = provider


def _ignore(error: Exception) -> None:
    return None


@dataclass(frozen=True)
class OutputChannel:
    """What a TTS may learn about the call it speaks on (optional: see `ChannelAware`).

    `sample_rate` is the rate the channel plays. A provider that can synthesise at that rate
    (or in the channel's own codec) should, so nothing is resampled or re-encoded on the way.
    `on_failure` is where a provider that recovered from a failure by itself (a fallback chain
    that moved on mid-sentence) reports it, so the session hears about every gap in speech.
    """

    sample_rate: int
    on_failure: Callable[[Exception], None] = _ignore

    @property
    def telephone(self) -> bool:
        """8 kHz is the phone (Twilio Media Streams, G.711 µ-law): a provider that can return
        µ-law should, decoded with `exact_mulaw_decode`, so the channel's encoder gives back the
        provider's very bytes."""
        return self.sample_rate == 8000


@runtime_checkable
class ChannelAware(Protocol):
    """Optional: a TTS that adapts to the channel it speaks on. `for_channel` is called once per
    call and returns a view of the same provider (shared connections, per-call format)."""

    def for_channel(self, channel: OutputChannel) -> TTS: ...


def for_channel(tts: TTS, channel: OutputChannel) -> TTS:
    """The TTS to speak on `channel` with: the provider's view for it when it adapts, else
    `tts` itself (a local voice synthesises at its own rate; the speaker resamples)."""
    if isinstance(tts, ChannelAware):
        return tts.for_channel(channel)
    return tts
