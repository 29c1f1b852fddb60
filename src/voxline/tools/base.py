"""What a tool is to the engine, and what it gets when it runs.

The engine depends only on this module: `Tool` is a protocol so function tools, HTTP webhook
tools and client tools (answered over a socket) all plug in the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import structlog

from voxline.providers.llm.base import ToolDefinition


@dataclass(frozen=True)
class ToolOptions:
    """How the executor treats a tool. `retries` counts extra attempts after the first."""

    timeout: float = 10.0
    retries: int = 0
    backoff: float = 0.5  # first retry delay in seconds, doubled each retry
    needs_approval: bool = False
    breaker_threshold: int = 5  # consecutive failures that open the circuit
    breaker_reset: float = 30.0  # seconds the circuit stays open before one trial call


@dataclass
class RunContext:
    """Handed to a tool that declares a `RunContext` parameter; the model never sees it."""

    conversation_id: str
    call_id: str = ""
    subject: str | None = None
    user_data: dict[str, Any] = field(default_factory=dict)
    session: Any = None  # the live Session, when there is one
    say: Callable[[str], Awaitable[None]] | None = None  # speak/send a message mid-tool
    log: Any = field(default_factory=lambda: structlog.get_logger("voxline.tool"))


@runtime_checkable
class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]
    options: ToolOptions

    def definition(self) -> ToolDefinition: ...

    async def invoke(self, arguments: dict[str, Any], ctx: RunContext) -> Any: ...


OutcomeKind = Literal[
    "ok",
    "error",
    "timeout",
    "circuit_open",
    "invalid_arguments",
    "unknown_tool",
    "pending_approval",
    "rejected",
]
"""How a call ended, as the executor decides it; a closed set, so safe as a metrics label."""
OUTCOME_KINDS: frozenset[str] = frozenset(get_args(OutcomeKind))


@dataclass
class ToolOutcome:
    """The result of one call as the model will see it. Failures are outcomes, not exceptions."""

    call_id: str
    name: str
    content: str
    is_error: bool = False
    approval_id: str | None = None  # set when the call is waiting for a human
    attempts: int = 1
    duration: float = 0.0
    # How it ended, for metrics and audits: one of `OUTCOME_KINDS` (the executor's kinds).
    kind: str = "ok"
