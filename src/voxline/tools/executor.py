"""Runs the model's tool calls: timeouts, retries, circuit breakers, approvals.

Every way a call can go wrong ends as a `ToolOutcome` the model reads ("the tool failed: ..."),
never as an exception, so one bad tool cannot end a conversation. The one exception that does
escape is cancellation, which reaches a started tool only when its conversation closes: an
interruption cancels the reply, while the tool runs on to its result (see `ReplyEngine`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import pydantic_core
import structlog

from voxline.providers.llm.base import ConfigurationError, ToolCallRequest, ToolDefinition
from voxline.store.base import ApprovalRecord, ApprovalStatus
from voxline.tools.approvals import ApprovalManager
from voxline.tools.base import OutcomeKind, RunContext, Tool, ToolOutcome
from voxline.tools.breaker import CircuitBreaker
from voxline.tools.registry import UnknownToolError
from voxline.tools.schema import ToolArgumentsError

_log = structlog.get_logger("voxline.tools")

_NOT_ERRORS: frozenset[OutcomeKind] = frozenset({"ok", "pending_approval"})
_MAX_REASON = 300

PENDING_APPROVAL_MESSAGE = (
    "This action needs a human's approval before it runs, and the request is now pending. "
    "Tell the user you are checking with a colleague and will come back to them; do not call "
    "this tool again for the same request."
)


@runtime_checkable
class ChecksArguments(Protocol):
    """A tool that can validate arguments without running, so a human never approves a call
    that would fail on its arguments anyway."""

    def check_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]: ...


class ToolExecutor:
    """Runs one agent's tools. Breakers live here, one per tool name, for the executor's life."""

    def __init__(
        self,
        tools: Iterable[Tool],
        *,
        approvals: ApprovalManager | None = None,
        pending_message: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self._tools[tool.name] = tool
        gated = [t.name for t in self._tools.values() if t.options.needs_approval]
        if gated and approvals is None:
            raise ConfigurationError(
                f"tools {', '.join(gated)} need approval: pass approvals=ApprovalManager(store)"
            )
        self._approvals = approvals
        self._pending = PENDING_APPROVAL_MESSAGE
        if pending_message:
            self._pending += f' Say it in your own words, along the lines of: "{pending_message}"'
        self._clock = clock
        self._sleep = sleep
        self._breakers = {
            t.name: CircuitBreaker(
                t.name,
                threshold=t.options.breaker_threshold,
                reset_after=t.options.breaker_reset,
                clock=clock,
            )
            for t in self._tools.values()
        }

    @property
    def tools(self) -> Mapping[str, Tool]:
        return MappingProxyType(self._tools)

    def definitions(self) -> list[ToolDefinition]:
        return [t.definition() for t in self._tools.values()]

    def breaker(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    async def run(self, call: ToolCallRequest, ctx: RunContext) -> ToolOutcome:
        started = self._clock()
        tool = self._tools.get(call.name)
        if tool is None:
            reason = str(UnknownToolError(call.name, self._tools))
            return self._finish(call.id, call.name, started, "unknown_tool", reason, attempts=0)
        try:
            arguments = call.parsed_arguments()
        except ValueError as exc:
            return self._finish(call.id, call.name, started, "invalid_arguments", str(exc), 0)
        if ctx.call_id != call.id:
            ctx = dataclasses.replace(ctx, call_id=call.id)
        if tool.options.needs_approval:
            return await self._request_approval(tool, call.id, arguments, ctx, started)
        return await self._execute(tool, call.id, arguments, ctx)

    async def run_many(
        self, calls: Iterable[ToolCallRequest], ctx_factory: Callable[[ToolCallRequest], RunContext]
    ) -> list[ToolOutcome]:
        """Run calls concurrently; outcomes come back in call order. `run` never raises, so one
        failing call cannot cancel its siblings; cancelling the caller cancels them all."""
        return list(await asyncio.gather(*(self.run(c, ctx_factory(c)) for c in calls)))

    async def run_approved(
        self, record: ApprovalRecord, tool: Tool, ctx: RunContext
    ) -> ToolOutcome:
        """Apply a human's decision: run the tool if approved, report the refusal if rejected,
        and persist what the model is told. The one call a session makes when a decision lands.

        Raises `ApprovalStateError` for a pending, already applied or currently applying approval
        (the stored record is re-read, so a stale copy cannot make a tool run twice).
        """
        approvals = self._require_approvals()
        current = await approvals.claim(record.id)
        outcome = await self._apply_decision(current, tool, ctx)
        try:
            await approvals.mark_applied(current.id, outcome.content)
        except Exception:
            # The tool already ran; its result must reach the model even if the store fails.
            _log.exception("could not mark approval applied", approval_id=current.id)
        return outcome

    async def _apply_decision(
        self, record: ApprovalRecord, tool: Tool, ctx: RunContext
    ) -> ToolOutcome:
        # The session may replay the call under a fresh id (the original one already has its
        # "pending" result in the history); `ctx.call_id` says which, the record's id otherwise.
        call_id = ctx.call_id or record.call_id
        ctx = dataclasses.replace(ctx, call_id=call_id)
        if record.status == ApprovalStatus.APPROVED:
            outcome = await self._execute(tool, call_id, record.arguments, ctx)
        else:
            why = f": {record.reason}" if record.reason else ""
            refusal = f"A human declined this action{why}. Tell the user it was not done."
            outcome = self._finish(call_id, record.tool, self._clock(), "rejected", refusal, 0)
        outcome.approval_id = record.id
        return outcome

    async def _request_approval(
        self,
        tool: Tool,
        call_id: str,
        arguments: dict[str, Any],
        ctx: RunContext,
        started: float,
    ) -> ToolOutcome:
        if isinstance(tool, ChecksArguments):
            try:
                tool.check_arguments(arguments)
            except ToolArgumentsError as exc:
                return self._finish(call_id, tool.name, started, "invalid_arguments", str(exc), 0)
        try:
            record = await self._require_approvals().request(tool.name, call_id, arguments, ctx)
        except Exception as exc:
            reason = f"could not ask for approval: {_short(exc)}"
            return self._finish(call_id, tool.name, started, "error", reason, attempts=0)
        return self._finish(
            call_id,
            tool.name,
            started,
            "pending_approval",
            self._pending,
            attempts=0,
            approval_id=record.id,
        )

    async def _execute(
        self, tool: Tool, call_id: str, arguments: dict[str, Any], ctx: RunContext
    ) -> ToolOutcome:
        started = self._clock()
        breaker = self._breakers[tool.name]
        kind: OutcomeKind = "circuit_open"
        content = f"{tool.name} is unavailable after repeated failures; try again later"
        attempts = 0
        for attempt in range(1, tool.options.retries + 2):
            if attempt > 1:
                await self._sleep(tool.options.backoff * 2 ** (attempt - 2))
            if not breaker.allow():
                break  # keeps the last real failure, or "unavailable" if nothing ran
            attempts = attempt
            kind, content = await self._attempt(tool, arguments, ctx, breaker)
            if kind in ("ok", "invalid_arguments"):
                break
        return self._finish(call_id, tool.name, started, kind, content, attempts)

    async def _attempt(
        self, tool: Tool, arguments: dict[str, Any], ctx: RunContext, breaker: CircuitBreaker
    ) -> tuple[OutcomeKind, str]:
        # A sync tool runs in a thread that a timeout cannot stop; the call is abandoned, and
        # the thread finishes in the background.
        scope = asyncio.timeout(tool.options.timeout)
        try:
            async with scope:
                value = await tool.invoke(arguments, ctx)
        except asyncio.CancelledError:
            breaker.release()
            raise
        except ToolArgumentsError as exc:
            breaker.release()
            return "invalid_arguments", str(exc)
        except Exception as exc:
            breaker.record_failure()
            if isinstance(exc, TimeoutError) and scope.expired():
                return "timeout", f"timed out after {tool.options.timeout:g}s"
            return "error", _short(exc)
        breaker.record_success()
        return "ok", to_content(value)

    def _finish(
        self,
        call_id: str,
        name: str,
        started: float,
        kind: OutcomeKind,
        content: str,
        attempts: int,
        approval_id: str | None = None,
    ) -> ToolOutcome:
        duration = self._clock() - started
        is_error = kind not in _NOT_ERRORS
        if is_error and kind != "rejected":
            content = f"the tool failed: {content[:_MAX_REASON]}"
        fields: dict[str, Any] = {
            "tool": name,
            "call_id": call_id,
            "attempts": attempts,
            "duration": round(duration, 4),
            "outcome": kind,
        }
        if approval_id is not None:
            fields["approval_id"] = approval_id
        if is_error:
            _log.warning("tool call", reason=content, **fields)
        else:
            _log.info("tool call", **fields)
        return ToolOutcome(
            call_id=call_id,
            name=name,
            content=content,
            is_error=is_error,
            approval_id=approval_id,
            attempts=attempts,
            duration=duration,
            kind=kind,
        )

    def _require_approvals(self) -> ApprovalManager:
        if self._approvals is None:
            raise ConfigurationError("this executor has no ApprovalManager (pass approvals=...)")
        return self._approvals


def to_content(value: Any) -> str:
    """What the model reads: text as is, anything else as JSON. Never empty, because some
    providers reject an empty tool result."""
    if isinstance(value, str):
        return value or "done"
    if value is None:
        return "done"
    return pydantic_core.to_json(value, fallback=str).decode()


def _short(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
