"""Redaction of personal data in what is kept and shown: stored turns and the debug feed.

An agent with `guardrails.redact_stored_pii` keeps card numbers, e-mails, phone numbers and
national ids out of its stored transcripts, while the live model still sees what the caller
said (it may need the e-mail to book the table). So the masking happens at the boundaries where
text leaves the live conversation, never in memory:

- the write-behind sync writes `record_transform(...)(record)`, a masked copy of each turn
  record (the in-memory turn is untouched);
- the debug feed passes its text fields through `text_mask(...)`.

A history loaded later (the next call, another worker) is the masked one: the model then sees
"[card ending 1111]", which is what an agent should remember of a card anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from voxline.guardrails.detect import mask_pii

if TYPE_CHECKING:
    from voxline.agents.spec import GuardrailSettings

RecordTransform = Callable[[dict[str, Any]], dict[str, Any]]
TextMask = Callable[[str], str]

# Turn fields that are identifiers or labels, never what someone said.
_STRUCTURAL = frozenset({"call_id", "name", "channel", "connection", "approval_id", "target"})
# Feed event fields that carry what someone said (see `voxline.server.feed.describe`).
FEED_TEXT_FIELDS = ("text", "delta", "heard", "content", "arguments")


def _masked(value: Any, mask: TextMask) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _masked(item, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, mask) for item in value]
    return value


def mask_record(record: dict[str, Any]) -> dict[str, Any]:
    """A turn record (`Turn.to_record()`) with personal data masked in everything said: the
    content, tool arguments and results, DTMF digits, handoff reasons and metadata. Ids,
    positions and versions are kept, so the version guard works as before."""
    data = record.get("data")
    if not isinstance(data, dict):
        return record
    masked = {
        key: value if key in _STRUCTURAL else _masked(value, mask_pii)
        for key, value in data.items()
    }
    return {**record, "data": masked}


def record_transform(config: GuardrailSettings) -> RecordTransform | None:
    """What `TurnSync` writes instead of each record; None when the agent keeps them as said."""
    return mask_record if config.redact_stored_pii else None


def text_mask(config: GuardrailSettings) -> TextMask | None:
    """What the debug feed shows instead of each text field; None: shown as said."""
    return mask_pii if config.redact_stored_pii else None


def mask_feed_event(event: dict[str, Any], mask: TextMask) -> dict[str, Any]:
    """A described feed event with its text fields masked (a tool call's arguments may be a
    dict: its strings are masked)."""
    for key in FEED_TEXT_FIELDS:
        if key in event:
            event[key] = _masked(event[key], mask)
    return event
