"""The OpenAI Realtime wire format as this endpoint speaks it: event names in both dialects,
client events parsed with pydantic, server events encoded under the size limit.

Two dialects share one vocabulary. The GA protocol is the default; a client that sends
`OpenAI-Beta: realtime=v1` (or offers the `openai-beta.realtime-v1` subprotocol, as browsers
must) gets the beta one. The rest of the package speaks GA names only and `Wire.event` renames
at the last moment, so the bookkeeping has a single code path and a dialect is a table here.

Bad input never ends a session: every way a client event can be wrong becomes a `ClientError`,
which the caller turns into an `error` event carrying the offending event's id
(`../shared/docs/protocols.md` §4.5) before going on with the next one.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from voxline.conversation.turns import new_id

MAX_SERVER_EVENT_BYTES = 1 << 20
"""The 2.x SDKs close the socket (1009) on any frame above 1 MiB, so no event may be bigger."""
MAX_CLIENT_EVENT_BYTES = 512 * 1024
"""Client events above this get an `error` event (the server's WebSocket limit, 1 MiB, closes
the socket outright): about 8 s of 24 kHz audio per append, plenty for streaming clients."""


class Dialect(StrEnum):
    GA = "ga"
    BETA = "beta"


# GA server event name -> beta name; None: the beta protocol has no such event.
_BETA_NAMES: dict[str, str | None] = {
    "conversation.item.added": "conversation.item.created",
    "conversation.item.done": None,
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}


class ClientError(Exception):
    """A client event the server cannot act on; becomes an `error` event."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
        self.kind = kind


class Wire:
    """Encodes server events for one socket's dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    @property
    def beta(self) -> bool:
        return self.dialect is Dialect.BETA

    def event(self, kind: str, /, **fields: Any) -> str | None:
        """One server event as JSON (`kind` is the GA name), or None when this dialect has no
        such event. An event that would break the size limit is replaced by an `error`."""
        if self.beta and kind in _BETA_NAMES:
            renamed = _BETA_NAMES[kind]
            if renamed is None:
                return None
            kind = renamed
        text = json.dumps({"type": kind, "event_id": new_id("event"), **fields})
        if len(text.encode()) <= MAX_SERVER_EVENT_BYTES:
            return text
        return self.error(
            ClientError(
                "event_too_large", f"a {kind} event was too large to send", kind="server_error"
            )
        )

    def error(self, error: ClientError) -> str:
        payload = {
            "type": error.kind,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": error.event_id,
        }
        return json.dumps({"type": "error", "event_id": new_id("event"), "error": payload})


# -- client events ----------------------------------------------------------------------------
class _In(BaseModel):
    """Unknown fields are ignored, as the SDKs send fields this server does not use."""

    model_config = ConfigDict(extra="ignore")

    event_id: str | None = None


class SessionUpdate(_In):
    type: Literal["session.update"]
    session: dict[str, Any]


class AudioAppend(_In):
    type: Literal["input_audio_buffer.append"]
    audio: str


class AudioCommit(_In):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(_In):
    type: Literal["input_audio_buffer.clear"]


class ContentIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(None, max_length=64)
    type: Literal["message", "function_call", "function_call_output"]
    role: Literal["user", "assistant", "system"] | None = None
    content: list[ContentIn] = Field(default_factory=list)
    call_id: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=64)
    arguments: str | None = None
    output: str | None = None


class ItemCreate(_In):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: ItemIn


class ItemTruncate(_In):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(0, ge=0)
    audio_end_ms: int = Field(ge=0)


class ItemDelete(_In):
    type: Literal["conversation.item.delete"]
    item_id: str


class ItemRetrieve(_In):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ResponseParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    instructions: str | None = None
    output_modalities: list[str] | None = None  # GA
    modalities: list[str] | None = None  # beta
    conversation: str | None = None
    input: list[Any] | None = None
    metadata: dict[str, Any] | None = None


class ResponseCreate(_In):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_In):
    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = Annotated[
    SessionUpdate
    | AudioAppend
    | AudioCommit
    | AudioClear
    | ItemCreate
    | ItemTruncate
    | ItemDelete
    | ItemRetrieve
    | ResponseCreate
    | ResponseCancel,
    Field(discriminator="type"),
]
_EVENTS: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
SUPPORTED = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)
NOT_ON_THIS_SERVER = {
    "output_audio_buffer.clear": "output_audio_buffer.clear is for WebRTC and SIP calls only",
    "transcription_session.update": "transcription-only sessions are not supported",
}


def parse_client_event(text: str) -> ClientEvent:
    """One client frame as a typed event; raises `ClientError` saying what is wrong."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ClientError("invalid_json", "the event is not valid JSON") from None
    if not isinstance(data, dict):
        raise ClientError("invalid_json", "an event must be a JSON object")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ClientError(
            "missing_required_parameter", "the event has no type", param="type", event_id=event_id
        )
    if kind in NOT_ON_THIS_SERVER:
        raise ClientError("unsupported_event", NOT_ON_THIS_SERVER[kind], event_id=event_id)
    if kind not in SUPPORTED:
        raise ClientError(
            "invalid_value",
            f"unknown event type {kind[:80]!r}; supported: {', '.join(SUPPORTED)}",
            param="type",
            event_id=event_id,
        )
    try:
        return _EVENTS.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:])
        raise ClientError(
            "invalid_value", f"{where or kind}: {first['msg']}", param=where, event_id=event_id
        ) from None
