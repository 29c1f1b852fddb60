"""The OpenAI Realtime wire format (protocols.md §4): server events read, client events made.

Reading is tolerant the way the official SDK is: any JSON object with a `type` is an event, and
every field is optional (the SDK builds its models without validation). Beta event names are
read as their GA twins (`response.audio.delta` is `response.output_audio.delta`), so a server
still speaking beta works unchanged; what we send is always GA. Events stay plain mappings
behind a few typed accessors: the engine reads a handful of fields per event, and a dataclass
per type would only restate the spec.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Beta names of server events, mapped to the GA names the engine handles.
BETA_NAMES = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}

# Events the client itself makes up, so the consumer hears about the connection in the same
# stream as the server's events.
CONNECTION_LOST = "voxline.connection_lost"
RECONNECTED = "voxline.reconnected"
FAILED = "voxline.failed"


class RealtimeProtocolError(ValueError):
    """A frame that is not a JSON object with a string `type`, or audio that is not base64."""


@dataclass(frozen=True)
class RealtimeEvent:
    """One server event: its (GA) `type` and the whole object as sent."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def text(self, key: str) -> str:
        value = self.data.get(key)
        return value if isinstance(value, str) else ""

    def number(self, key: str) -> int:
        value = self.data.get(key)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    def object(self, key: str) -> Mapping[str, Any]:
        value = self.data.get(key)
        return value if isinstance(value, Mapping) else {}

    def audio(self) -> bytes:
        """The base64 `delta` of an audio event, decoded; raises `RealtimeProtocolError`."""
        try:
            return base64.b64decode(self.text("delta"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RealtimeProtocolError(f"audio delta is not base64: {exc}") from None


def parse_server_event(frame: str | bytes) -> RealtimeEvent:
    """One inbound frame as an event; raises `RealtimeProtocolError` for anything else."""
    try:
        data = json.loads(frame)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RealtimeProtocolError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise RealtimeProtocolError("not a JSON object with a string `type`")
    kind = str(data["type"])
    return RealtimeEvent(BETA_NAMES.get(kind, kind), data)


def item_of(event: RealtimeEvent) -> Mapping[str, Any]:
    return event.object("item")


def error_message(event: RealtimeEvent) -> tuple[str, str]:
    """(code, message) of an `error` event (or of a failed response's status details)."""
    error = event.object("error")
    code = error.get("code") or error.get("type") or ""
    return str(code), str(error.get("message") or "")


# -- client events ---------------------------------------------------------------------------
def append_audio(audio: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}


def session_update(session: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "session.update", "session": dict(session)}


def message_item(role: str, text: str) -> dict[str, Any]:
    """A text message item: the user's and the system's are `input_text`, the assistant's
    `output_text` (GA item content types)."""
    part = "output_text" if role == "assistant" else "input_text"
    item = {"type": "message", "role": role, "content": [{"type": part, "text": text}]}
    return {"type": "conversation.item.create", "item": item}


def function_call_item(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    item = {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}
    return {"type": "conversation.item.create", "item": item}


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return {"type": "conversation.item.create", "item": item}


def truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": max(0, audio_end_ms),
    }


def response_create(instructions: str | None = None) -> dict[str, Any]:
    if instructions is None:
        return {"type": "response.create"}
    return {"type": "response.create", "response": {"instructions": instructions}}


def response_cancel() -> dict[str, Any]:
    return {"type": "response.cancel"}
