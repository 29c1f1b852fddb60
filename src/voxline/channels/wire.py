"""What every JSON-over-WebSocket wire format here shares: tolerant reading of one frame.

Peers (Twilio, browsers) add fields and message types without notice and send numbers as
strings, so parsers read leniently; only a frame that is not a tagged JSON object is an error.
"""

from __future__ import annotations

import json
from typing import Any


def load_tagged(frame: str, tag: str, error: type[ValueError]) -> tuple[str, dict[str, Any]]:
    """The frame's kind (the string under `tag`) and its object; `error` for anything else."""
    try:
        data = json.loads(frame)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise error(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(tag), str):
        raise error(f"not a JSON object with a string {tag!r}")
    return data[tag], data


def as_text(value: object) -> str:
    """A field as text: strings as they are, numbers and booleans written out, the rest empty."""
    if value is None or isinstance(value, dict | list):
        return ""
    return value if isinstance(value, str) else str(value)
