"""The audit log: every tool an agent ran and every approval a human decided, who and when.

Transcripts answer "what was said"; the audit log answers "who did what": which agent ran the
refund tool in which call, with which arguments, and how it ended; which API key approved it.
Entries go to the store (`Store.append_audit`), are never changed, outlive the conversation's
retention, and are read over `GET /api/audit`.

Tool runs are taken from a session's events (`tool_finished`, and `approval_resolved` for a
tool run after a human's decision), so nothing in the reply path waits for the log: each entry
is written by its own task, which the session's bus drain awaits at close. Arguments are kept
with personal data masked (an audit log is kept for years and read by many): a refund's order
and amount stay readable, a card number becomes its last four digits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from voxline.conversation.turns import new_id
from voxline.guardrails.detect import mask_pii
from voxline.guardrails.storage import mask_record
from voxline.providers.llm.base import ToolCallRequest
from voxline.store.base import ApprovalRecord, ApprovalStatus, AuditAction, AuditRecord, Store
from voxline.tools.base import ToolOutcome
from voxline.tools.executor import PENDING_APPROVAL_MESSAGE

if TYPE_CHECKING:
    from voxline.conversation.session import Session

log = structlog.get_logger("voxline.audit")

_REASON_CHARS = 300


class KeyHolder(Protocol):
    """Who decided: an API key's principal (`voxline.server.api.auth.Principal`)."""

    @property
    def key_id(self) -> str: ...

    @property
    def name(self) -> str: ...


def tool_outcome(outcome: ToolOutcome) -> str:
    """One word for how a tool call ended."""
    if outcome.approval_id and not outcome.is_error:
        return "pending_approval"
    if outcome.attempts == 0:
        return "not_run"
    return "error" if outcome.is_error else "ok"


def _masked(value: Any) -> Any:
    return mask_record({"data": {"value": value}})["data"]["value"]


def _arguments(call: ToolCallRequest) -> Any:
    try:
        return _masked(call.parsed_arguments())
    except ValueError:
        return mask_pii(call.arguments)


class AuditTrail:
    """Writes the audit entries of the sessions it watches into `store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def watch(self, session: Session) -> Callable[[], None]:
        """Log `session`'s tool runs from now on; returns the unsubscribe function."""
        agent = session.spec.name
        base: dict[str, Any] = {
            "actor": f"agent:{agent}",
            "agent": agent,
            "conversation_id": session.id,
            "connection_id": session.connection_id,
            "subject": session.subject,
        }

        async def tool_finished(call: ToolCallRequest, outcome: ToolOutcome, **_: Any) -> None:
            details: dict[str, Any] = {
                "call_id": call.id,
                "arguments": _arguments(call),
                "attempts": outcome.attempts,
                "duration": round(outcome.duration, 4),
            }
            if outcome.approval_id:
                details["approval_id"] = outcome.approval_id
            if outcome.is_error:
                details["error"] = mask_pii(outcome.content[:_REASON_CHARS])
            kind = tool_outcome(outcome)
            if kind == "pending_approval" and outcome.content != PENDING_APPROVAL_MESSAGE:
                details["message"] = mask_pii(outcome.content[:_REASON_CHARS])
            await self._append(tool=call.name, outcome=kind, details=details, **base)

        async def approval_resolved(approval: ApprovalRecord, **_: Any) -> None:
            ran = approval.status == ApprovalStatus.APPROVED
            details = {"approval_id": approval.id, "arguments": _masked(approval.arguments)}
            outcome = "ran_after_approval" if ran else "rejected"
            await self._append(tool=approval.tool, outcome=outcome, details=details, **base)

        offs = [
            session.on("tool_finished", tool_finished),
            session.on("approval_resolved", approval_resolved),
        ]

        def unsubscribe() -> None:
            for off in offs:
                off()

        return unsubscribe

    async def decision(self, record: ApprovalRecord, who: KeyHolder | str | None) -> None:
        """A human approved or rejected `record` (after the decision is stored)."""
        if who is None:
            actor = "unknown"
        elif isinstance(who, str):
            actor = who
        else:
            actor = f"key:{who.key_id} ({who.name})"
        details: dict[str, Any] = {
            "approval_id": record.id,
            "arguments": _masked(record.arguments),
        }
        if record.reason:
            details["reason"] = mask_pii(record.reason[:_REASON_CHARS])
        await self._append(
            action=AuditAction.APPROVAL_DECIDED,
            actor=actor,
            conversation_id=record.conversation_id,
            connection_id=record.connection_id,
            subject=record.subject,
            tool=record.tool,
            outcome=str(record.status),
            details=details,
        )

    async def _append(self, *, action: AuditAction = AuditAction.TOOL_RUN, **fields: Any) -> None:
        entry = AuditRecord(id=new_id("audit"), at=time.time(), action=action, **fields)
        try:
            await self.store.append_audit(entry)
        except Exception as exc:  # the log must never break the call it watches
            log.error(
                "audit entry not written",
                action=action.value,
                tool=fields.get("tool"),
                conversation_id=fields.get("conversation_id"),
                error=type(exc).__name__,
            )


async def record_decision(
    store: Store, record: ApprovalRecord, who: KeyHolder | str | None
) -> None:
    """The approval route's hook: log a human's decision (never raises)."""
    await AuditTrail(store).decision(record, who)
