"""The browser channel's wire format (`/web/call`), kept apart from the call logic so that a
custom front end has one small module to read.

Binary frames carry audio. Caller audio in is bare mono PCM16 little-endian at `INPUT_RATE`.
Bot audio out is an 8-byte little-endian float64 header, the position on the bot's audio
timeline at which the frame ends, then mono PCM16 at the announced output rate: the client
sends that position back in a `played` message once the frame has really played, which is how
the server knows what the caller heard when they cut in. Text frames carry JSON objects with a
`type` (see docs/browser.md for the full list).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.audio.frames import AudioFrame
from voxline.channels.wire import load_tagged

INPUT_RATE = 16000
"""Caller audio the server accepts: what the page's worklet produces and Silero/Whisper hear."""
MAX_AUDIO_SECONDS = 1.0
"""A longer inbound binary frame is refused: clients send 20 ms, and a huge one is an error."""
MAX_AUDIO_BYTES = round(INPUT_RATE * MAX_AUDIO_SECONDS) * 2
MAX_TEXT_FRAME_BYTES = 65536
MAX_TYPED_CHARS = 4000
OUTPUT_RATES = range(8000, 48001)
"""Output rates a client may ask for (`?output_rate=`): WebAudio plays 8-48 kHz everywhere,
and asking for the AudioContext's own rate spares the browser a resampler per frame."""
_HEADER = struct.Struct("<d")


class WebProtocolError(ValueError):
    """A client frame that breaks the protocol; the message says how, for the client's log."""


@dataclass(frozen=True)
class TypedText:
    """The user typed instead of speaking."""

    text: str


@dataclass(frozen=True)
class Played:
    """The client has played bot audio up to `position` (a frame header's value)."""

    position: float


ClientMessage = TypedText | Played


def parse_text_frame(frame: str) -> ClientMessage:
    """A client's JSON text frame as a message; raises `WebProtocolError` when it is not one."""
    if len(frame) > MAX_TEXT_FRAME_BYTES or len(frame.encode()) > MAX_TEXT_FRAME_BYTES:
        raise WebProtocolError(f"text frame over {MAX_TEXT_FRAME_BYTES} bytes")
    kind, data = load_tagged(frame, "type", WebProtocolError)
    if kind == "text":
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise WebProtocolError("'text' needs a non-empty string 'text'")
        if len(text) > MAX_TYPED_CHARS:
            raise WebProtocolError(f"'text' is over {MAX_TYPED_CHARS} characters")
        return TypedText(text.strip())
    if kind == "played":
        position = data.get("position")
        if (
            not isinstance(position, int | float)
            or isinstance(position, bool)
            or not math.isfinite(position)
            or position < 0
        ):
            raise WebProtocolError("'played' needs a finite, non-negative number 'position'")
        return Played(float(position))
    raise WebProtocolError(f"unknown message type {kind[:40]!r}")


def parse_audio_frame(frame: bytes) -> npt.NDArray[np.int16]:
    """Caller audio as samples (a view of `frame`); raises `WebProtocolError` when the frame
    cannot be 16-bit PCM or is too long to be a live frame."""
    if not frame:
        raise WebProtocolError("empty audio frame")
    if len(frame) % 2:
        raise WebProtocolError("audio frame has an odd number of bytes (PCM16 expected)")
    if len(frame) > MAX_AUDIO_BYTES:
        raise WebProtocolError(f"audio frame over {MAX_AUDIO_SECONDS:g} s")
    return np.frombuffer(frame, dtype="<i2").astype(np.int16, copy=False)


def encode_bot_audio(frame: AudioFrame) -> bytes:
    """The header (where the frame ends on the timeline) and the samples, as one message."""
    return _HEADER.pack(frame.end) + frame.pcm.astype("<i2", copy=False).tobytes()


def decode_bot_audio(message: bytes) -> tuple[float, npt.NDArray[np.int16]]:
    """The inverse of `encode_bot_audio`, for Python clients and tests."""
    (end,) = _HEADER.unpack_from(message)
    return end, np.frombuffer(message, dtype="<i2", offset=_HEADER.size).astype(np.int16)


def event(kind: str, /, **fields: Any) -> str:
    """A server-to-client JSON event."""
    return json.dumps({"type": kind, **fields}, ensure_ascii=False)
