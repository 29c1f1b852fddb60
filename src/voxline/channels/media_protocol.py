"""Twilio Media Streams' JSON messages (protocols.md §2.3, §2.4): the wire format alone.

Parsing is tolerant the way Twilio asks: unknown keys are ignored, every field is optional and
read as text (a digit or a number may arrive as either), and an unknown `event` is reported as
such rather than treated as an error, because Twilio adds fields and events without notice. Only
the fields voxline acts on are kept. Media payloads are decoded here,
strictly: base64 that does not decode exactly is an error, not audio with a byte shifted.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from voxline.channels.wire import as_text, load_tagged

MULAW_RATE = 8000  # Twilio streams and plays G.711 mu-law at 8 kHz, mono, nothing else


class MediaProtocolError(ValueError):
    """A frame that is not a JSON object with an `event`, or a payload that is not base64."""


@dataclass(frozen=True)
class Connected:
    """The socket is open; `start` follows with the call's details."""


@dataclass(frozen=True)
class Start:
    stream_sid: str = ""
    call_sid: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Media:
    payload: str  # base64, decoded by `audio()` only when the frame is used
    track: str = ""

    def audio(self) -> bytes:
        """The mu-law bytes; raises `MediaProtocolError` for anything but canonical base64."""
        try:
            return base64.b64decode(self.payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaProtocolError(f"payload is not base64: {exc}") from None


@dataclass(frozen=True)
class Mark:
    name: str


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class Stop:
    """The call is over (or the stream was stopped); no message follows."""


@dataclass(frozen=True)
class Unknown:
    event: str


MediaEvent = Connected | Start | Media | Mark | Dtmf | Stop | Unknown


def parse_event(frame: str) -> MediaEvent:
    """One inbound text frame; raises `MediaProtocolError` for frames that are not events."""
    kind, data = load_tagged(frame, "event", MediaProtocolError)
    body = _object(data, kind)
    if kind == "media":
        return Media(
            payload=as_text(body.get("payload")),
            track=as_text(body.get("track")),
        )
    if kind == "mark":
        return Mark(name=as_text(body.get("name")))
    if kind == "start":
        params = body.get("customParameters")
        return Start(
            stream_sid=as_text(body.get("streamSid") or data.get("streamSid")),
            call_sid=as_text(body.get("callSid")),
            custom_parameters=(
                {str(k): as_text(v) for k, v in params.items()} if isinstance(params, dict) else {}
            ),
        )
    if kind == "dtmf":
        return Dtmf(digit=as_text(body.get("digit")))
    if kind == "stop":
        return Stop()
    if kind == "connected":
        return Connected()
    return Unknown(event=kind)


def media(stream_sid: str, mulaw: bytes) -> str:
    payload = base64.b64encode(mulaw).decode("ascii")
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def mark(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}
