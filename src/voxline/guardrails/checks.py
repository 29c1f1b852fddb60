"""What a guardrail check says, and the registry of custom checks written in Python.

A check looks at text and answers nothing (pass), a `Trip` (stop: the agent gives the configured
response or hands the call over) or, on the reply stream only, a `Rewrite` (say this instead).
Custom checks are registered by name, as tools are (`voxline.tools.registry`), so an agent
written as JSON can name them:

    from voxline.guardrails import Trip, guardrail

    @guardrail
    def no_competitors(text: str, ctx: GuardrailContext) -> Trip | None:
        if "acme" in text.lower():
            return Trip("no_competitors", reason="mentions a competitor")
        return None

An input check may be a coroutine function (the reply waits for it, so keep it fast); an output
check runs inside the reply stream on each sentence and must be a plain function.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar, overload

import structlog

_log = structlog.get_logger("voxline.guardrails")

Stage = Literal["input", "output"]
Action = Literal["respond", "handoff", "cut", "rewrite", "note"]


@dataclass(frozen=True)
class Trip:
    """A check that stopped something. `reason` is for people reading the turn annotation and
    logs, so it names what was found, never the value. `response` overrides the configured
    one; `action` is filled in from the configuration when left empty."""

    check: str
    reason: str = ""
    action: Action | None = None
    response: str | None = None

    def annotation(self, stage: Stage, *, late: bool = False) -> dict[str, Any]:
        """What is recorded on the turn (`turn.metadata["guardrails"]`)."""
        entry: dict[str, Any] = {"check": self.check, "stage": stage, "action": self.action}
        if self.reason:
            entry["reason"] = self.reason
        if late:
            entry["late"] = True
        return entry


@dataclass(frozen=True)
class Rewrite:
    """An output check's replacement for the sentence it was given."""

    text: str
    reason: str = ""


CheckResult = Trip | Rewrite | bool | None


@dataclass(frozen=True)
class GuardrailContext:
    """Where a check runs: the stage and whose conversation it is."""

    stage: Stage
    conversation_id: str = ""
    connection: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


CustomCheck = Callable[[str, GuardrailContext], CheckResult | Awaitable[CheckResult]]


class UnknownGuardrailError(KeyError):
    """No check has that name; the message lists the ones that exist."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        names = ", ".join(sorted(available)) or "none"
        super().__init__(f"no guardrail check named {name!r}; registered: {names}")

    def __str__(self) -> str:
        return str(self.args[0])


_checks: dict[str, CustomCheck] = {}
C = TypeVar("C", bound=CustomCheck)


@overload
def guardrail(check: C, /) -> C: ...


@overload
def guardrail(*, name: str | None = None) -> Callable[[C], C]: ...


def guardrail(check: C | None = None, /, *, name: str | None = None) -> C | Callable[[C], C]:
    """Register a custom check under its function name (or `name`). Registering a name again
    replaces the old check, as module reloads during development expect."""

    def register(fn: C) -> C:
        key = name or getattr(fn, "__name__", "")
        if not key:
            raise ValueError("a guardrail check needs a name")
        if key in _checks and _checks[key] is not fn:
            _log.info("guardrail check replaced in registry", check=key)
        _checks[key] = fn
        return fn

    return register(check) if check is not None else register


def get_guardrail(name: str) -> CustomCheck:
    try:
        return _checks[name]
    except KeyError:
        raise UnknownGuardrailError(name, _checks) from None


def registered_guardrails() -> frozenset[str]:
    """The names custom checks are registered under now."""
    return frozenset(_checks)


def unregister_guardrail(name: str) -> None:
    """Forget a check (tests)."""
    _checks.pop(name, None)


def is_async(check: CustomCheck) -> bool:
    return inspect.iscoroutinefunction(check) or inspect.iscoroutinefunction(
        getattr(check, "__call__", None)  # noqa: B004 - a callable object's method
    )


def as_trip(result: CheckResult, check: str) -> Trip | Rewrite | None:
    """A check's answer in one shape: False trips, True and None pass."""
    if result is None or result is True:
        return None
    if result is False:
        return Trip(check)
    if isinstance(result, Trip) and not result.check:
        return Trip(check, result.reason, result.action, result.response)
    return result


def complete_trip(
    trip: Trip, action: str, response: str | None, responses: Mapping[str, str]
) -> Trip:
    """`trip` with its action and what to say filled in: the trip's own choice first, then the
    check's configuration (`action`, `response`), then the section's response for the action
    (`responses`: "respond" and "handoff")."""
    chosen = trip.action if trip.action in ("respond", "handoff") else action
    if chosen not in responses:
        chosen = "respond"
    said = trip.response or response or responses[chosen]
    return replace(trip, action=chosen, response=said)  # type: ignore[arg-type]
