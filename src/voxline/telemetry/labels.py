"""Bounded label values, so a metric's series count cannot grow with traffic.

Prometheus keeps one time series per distinct combination of label values, for as long as the
process lives. Agent names come from the REST API, tool names from what a model chose to call,
provider labels from agent specs: all of them are finite in a sane deployment and unbounded in a
hostile or buggy one. Each label kind therefore remembers at most `MAX_VALUES` distinct values
per process; anything new after that is reported as `OTHER`. Values are also cut to
`MAX_LENGTH` characters. Ids and numbers (call ids, phone numbers) never become labels at all:
callers pass only names.
"""

from __future__ import annotations

MAX_VALUES = 100
MAX_LENGTH = 64
OTHER = "other"
NONE = "none"


class BoundedValues:
    """The values one label kind may take in this process: the first `limit` seen, then
    `OTHER`. Lookups of known values are one set membership test (they run on the bus)."""

    def __init__(self, limit: int = MAX_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        if value is None or value == "":
            return NONE
        text = str(value)[:MAX_LENGTH]
        if text in self._seen:
            return text
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(text)
        return text

    def __len__(self) -> int:
        return len(self._seen)


agents = BoundedValues()
channels = BoundedValues()
tools = BoundedValues()
providers = BoundedValues()
# Where an error was reported (`error` events' `where`: reply, stt, voice reply, ...).
places = BoundedValues(limit=20)


def provider_parts(label: str) -> tuple[str, str]:
    """A provider label (`openai:gpt-4.1-mini`, `openai-compatible:qwen`, `fake`) as (system,
    model): the GenAI trace attributes want them apart."""
    system, sep, model = label.partition(":")
    return (system, model) if sep else (label, label)
