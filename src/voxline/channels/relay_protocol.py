"""ConversationRelay's JSON messages (protocols.md §1.3, §1.4): the wire format alone.

Parsing is tolerant the way Twilio asks: unknown keys are ignored, every field is optional,
numbers may arrive as strings, and an unknown `type` is reported as such rather than treated as
an error, because Twilio adds fields and message types without notice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from voxline.channels.wire import as_text, load_tagged


class RelayProtocolError(ValueError):
    """A frame that is not a JSON object with a `type`."""


@dataclass(frozen=True)
class Setup:
    session_id: str = ""
    call_sid: str = ""
    account_sid: str = ""
    from_: str = ""
    to: str = ""
    direction: str = ""
    caller_name: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)

    @property
    def remote_party(self) -> str:
        """The caller's number: `from` on inbound calls, `to` on calls we placed."""
        return self.to if self.direction.startswith("outbound") else self.from_


@dataclass(frozen=True)
class Prompt:
    text: str
    last: bool
    lang: str = ""


@dataclass(frozen=True)
class Interrupt:
    heard: str | None  # None when Twilio did not say what was played
    duration_ms: float | None


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class RelayError:
    description: str


@dataclass(frozen=True)
class Info:
    name: str
    value: str


@dataclass(frozen=True)
class Unknown:
    type: str


RelayMessage = Setup | Prompt | Interrupt | Dtmf | RelayError | Info | Unknown


def parse_message(frame: str) -> RelayMessage:
    """One inbound text frame; raises `RelayProtocolError` for frames that are not messages."""
    kind, data = load_tagged(frame, "type", RelayProtocolError)
    if kind == "setup":
        params = data.get("customParameters")
        return Setup(
            session_id=_str(data, "sessionId"),
            call_sid=_str(data, "callSid"),
            account_sid=_str(data, "accountSid"),
            from_=_str(data, "from"),
            to=_str(data, "to"),
            direction=_str(data, "direction"),
            caller_name=_str(data, "callerName"),
            custom_parameters=(
                {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {}
            ),
        )
    if kind == "prompt":
        return Prompt(
            text=_str(data, "voicePrompt"),
            last=_bool(data.get("last", True)),
            lang=_str(data, "lang"),
        )
    if kind == "interrupt":
        heard = data.get("utteranceUntilInterrupt")
        return Interrupt(
            heard=heard if isinstance(heard, str) else None,
            duration_ms=_number(data.get("durationUntilInterruptMs")),
        )
    if kind == "dtmf":
        return Dtmf(digit=_str(data, "digit"))
    if kind == "error":
        return RelayError(description=_str(data, "description"))
    if kind == "info":
        return Info(name=_str(data, "name"), value=_str(data, "value"))
    return Unknown(type=kind)


def text_token(token: str, *, last: bool, lang: str | None = None) -> str:
    message: dict[str, Any] = {"type": "text", "token": token, "last": last}
    if lang:
        message["lang"] = lang
    return json.dumps(message)


def play(source: str, *, loop: int = 1, interruptible: bool = True) -> str:
    return json.dumps(
        {"type": "play", "source": source, "loop": loop, "interruptible": interruptible}
    )


def send_digits(digits: str) -> str:
    return json.dumps({"type": "sendDigits", "digits": digits})


def language(code: str) -> str:
    return json.dumps({"type": "language", "ttsLanguage": code, "transcriptionLanguage": code})


def end(handoff_data: str | None = None) -> str:
    message: dict[str, Any] = {"type": "end"}
    if handoff_data is not None:
        message["handoffData"] = handoff_data
    return json.dumps(message)


def _str(data: dict[str, Any], key: str) -> str:
    return as_text(data.get(key))


def _bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None
