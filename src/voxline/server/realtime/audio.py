"""Audio between the Realtime wire and the voice pipeline.

`RealtimeTransport` is the endpoint's `AudioTransport`: the pipeline sends it paced frames at the
session's output format and it hands their bytes to the bridge, which makes them
`response.output_audio.delta` events; `clear()` (barge-in) drops what has not left yet. Frames
count as played when sent (`reports_playback = False`), since a Realtime client reports what it
played only afterwards, with `conversation.item.truncate`, which the bridge applies then.

`ObservedPipeline` is the cascaded `VoicePipeline` unchanged, except that the bridge sees the
turn-taking events it already computes (speech started, speech ended), which the Realtime
protocol reports to the client as `input_audio_buffer.speech_started` / `speech_stopped`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from voxline.audio import AudioFrame, mulaw_decode, mulaw_encode, pcm16_to_bytes
from voxline.audio.turn_taking import GateEvent, SpeechChunk
from voxline.providers.stt.base import PCM16
from voxline.server.realtime.config import AudioFormat
from voxline.server.realtime.protocol import ClientError
from voxline.voice.pipeline import VoicePipeline


class AudioSink(Protocol):
    async def on_audio(self, frame: AudioFrame, payload: bytes) -> None: ...

    def on_clear(self) -> None: ...


class RealtimeTransport:
    reports_playback = False

    def __init__(self, input_format: AudioFormat, output_format: AudioFormat, sink: AudioSink):
        self.input_format = input_format
        self.output_format = output_format
        self.input_rate = input_format.rate
        self.output_rate = output_format.rate
        self._sink = sink

    async def send(self, frame: AudioFrame) -> None:
        await self._sink.on_audio(frame, encode(frame.pcm, self.output_format))

    def clear(self) -> None:
        self._sink.on_clear()


class ObservedPipeline(VoicePipeline):
    """A `VoicePipeline` that also reports its speech-start and speech-end events."""

    def __init__(self, *args: Any, on_gate: Callable[[GateEvent], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_gate = on_gate

    def _handle(self, events: Sequence[GateEvent]) -> None:
        for event in events:
            if not isinstance(event, SpeechChunk):
                self._on_gate(event)
        super()._handle(events)


def encode(pcm: PCM16, audio_format: AudioFormat) -> bytes:
    if audio_format is AudioFormat.ULAW:
        return mulaw_encode(pcm)
    return pcm16_to_bytes(pcm)


def decode(audio: str, audio_format: AudioFormat, *, param: str = "audio") -> PCM16:
    """Base64 audio from the client as PCM16 samples (raises `ClientError` when it is not)."""
    try:
        raw = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("invalid_base64", "the audio is not valid base64", param=param) from None
    if audio_format is AudioFormat.ULAW:
        return mulaw_decode(raw)
    if len(raw) % 2:
        raise ClientError(
            "invalid_audio", "PCM16 audio must be a whole number of 2-byte samples", param=param
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)
