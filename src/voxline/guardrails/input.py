"""Input guardrails: the checks on a caller's turn that run before the model sees it.

Personal data, blocked topics and custom Python checks are decided here, in that order, and the
first that trips decides. They are patterns and plain functions, so they cost microseconds and
run inline before the model request; the LLM classifier is the one check that would cost a
model round trip, so it runs beside the reply instead (`classifier.py`).

A `Trip` leaving here is complete: its action and response are filled in from the
configuration, so the engine only has to carry it out.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from dataclasses import dataclass, field

from voxline.guardrails.checks import (
    CustomCheck,
    GuardrailContext,
    Rewrite,
    Trip,
    as_trip,
    complete_trip,
    get_guardrail,
)
from voxline.guardrails.config import InputGuardrails, TopicCheck
from voxline.guardrails.detect import find_pii


@dataclass
class InputVerdict:
    """What the input checks decided about one turn. `pii` counts what was found by kind
    (never the values), whatever the action."""

    trip: Trip | None = None
    pii: dict[str, int] = field(default_factory=dict)

    @property
    def tripped(self) -> bool:
        return self.trip is not None


def topic_pattern(config: TopicCheck) -> re.Pattern[str] | None:
    """One case-blind alternation of every keyword (whole words) and pattern; None when empty."""
    parts = [rf"(?<!\w){re.escape(word.strip())}(?!\w)" for word in config.keywords if word.strip()]
    parts += [f"(?:{pattern})" for pattern in config.patterns]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


class InputChecks:
    """The input checks of one agent, compiled once per session."""

    def __init__(self, config: InputGuardrails, *, response: str, handoff_response: str) -> None:
        self.config = config
        self._responses = {"respond": response, "handoff": handoff_response}
        self._topics = topic_pattern(config.blocked_topics)
        self._custom: list[tuple[str, CustomCheck]] = [
            (name, get_guardrail(name)) for name in config.custom
        ]

    @property
    def active(self) -> bool:
        return bool(self.config.pii.kinds or self._topics is not None or self._custom)

    async def check(self, text: str, ctx: GuardrailContext) -> InputVerdict:
        verdict = InputVerdict()
        pii = self.config.pii
        if pii.kinds:
            found = find_pii(text, pii.kinds)
            verdict.pii = dict(Counter(f.kind for f in found))
            if found and pii.action != "note":
                kinds = ", ".join(sorted(verdict.pii))
                verdict.trip = self.complete(
                    Trip("pii", f"personal data: {kinds}"), pii.action, pii.response
                )
                return verdict
        if self._topics is not None and self._topics.search(text):
            topics = self.config.blocked_topics
            verdict.trip = self.complete(
                Trip("blocked_topic", "a blocked topic"), topics.action, topics.response
            )
            return verdict
        for name, check in self._custom:
            result = check(text, ctx)
            if inspect.isawaitable(result):
                result = await result
            found_trip = as_trip(result, name)
            if isinstance(found_trip, Trip):
                verdict.trip = self.complete(found_trip, "respond", None)
                return verdict
            if isinstance(found_trip, Rewrite):  # a rewrite means nothing before the model
                continue
        return verdict

    def complete(self, trip: Trip, action: str, response: str | None) -> Trip:
        """Fill in `trip`'s action and response from the configuration (the trip's own win)."""
        return complete_trip(trip, action, response, self._responses)
