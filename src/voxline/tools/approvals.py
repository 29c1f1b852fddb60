"""Human approval of sensitive tool calls: requests persisted, decisions routed back.

A call that needs approval is stored as a pending `ApprovalRecord` and the conversation goes on.
A human (through the API) approves or rejects it later, maybe after a restart, on any worker, so
the record in the store is the truth. Every transition is a compare-and-set in the store
(`pending -> approved | rejected`, then `claimed` by whoever applies it, then `applied`): any
number of concurrent decisions on any number of workers have exactly one winner, and the tool
runs at most once. No in-process lock could promise that across workers.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from voxline.store.base import ApprovalRecord, ApprovalStatus, Store
from voxline.tools.base import RunContext

_log = structlog.get_logger("voxline.tools")

ApprovalCallback = Callable[[ApprovalRecord], Awaitable[None]]


class ApprovalNotFoundError(KeyError):
    def __init__(self, approval_id: str) -> None:
        super().__init__(f"no approval with id {approval_id!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class ApprovalStateError(RuntimeError):
    """The approval is not in a state that allows this (decided twice, applied twice...)."""


class ApprovalManager:
    """Creates, decides and applies approvals; one per process is enough, sessions share it.

    Callbacks run inside `approve`/`reject`/`request`: keep them short and start a task for long
    work (running the tool, a model turn) so the human's API call is not held open by it.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending_listeners: list[ApprovalCallback] = []
        self._decision_subscribers: dict[str, list[ApprovalCallback]] = {}
        self.claimer = f"claim_{secrets.token_hex(8)}"  # who claims, in the records we claim

    async def request(
        self, tool: str, call_id: str, arguments: dict[str, Any], ctx: RunContext
    ) -> ApprovalRecord:
        record = ApprovalRecord(
            id=f"apr_{secrets.token_hex(8)}",
            conversation_id=ctx.conversation_id,
            call_id=call_id,
            tool=tool,
            arguments=arguments,
            subject=ctx.subject,
            connection_id=_connection_of(ctx),
        )
        await self._store.save_approval(record)
        _log.info("approval requested", approval_id=record.id, tool=tool, call_id=call_id)
        await self._notify(self._pending_listeners, record)
        return record

    def on_pending(self, callback: ApprovalCallback) -> Callable[[], None]:
        """Hear about every new request (a dashboard, a webhook to staff); returns unsubscribe."""
        return _add(self._pending_listeners, callback)

    def subscribe(self, conversation_id: str, callback: ApprovalCallback) -> Callable[[], None]:
        """Hear the decisions on one conversation's approvals; returns unsubscribe."""
        callbacks = self._decision_subscribers.setdefault(conversation_id, [])
        remove = _add(callbacks, callback)

        def unsubscribe() -> None:
            remove()
            if not callbacks and self._decision_subscribers.get(conversation_id) is callbacks:
                del self._decision_subscribers[conversation_id]

        return unsubscribe

    async def get(self, approval_id: str) -> ApprovalRecord:
        record = await self._store.get_approval(approval_id)
        if record is None:
            raise ApprovalNotFoundError(approval_id)
        return record

    async def list_pending(self, conversation_id: str | None = None) -> list[ApprovalRecord]:
        return await self._store.list_approvals(
            status=ApprovalStatus.PENDING, conversation_id=conversation_id
        )

    async def approve(self, approval_id: str) -> ApprovalRecord:
        return await self._decide(approval_id, ApprovalStatus.APPROVED, None)

    async def reject(self, approval_id: str, reason: str | None = None) -> ApprovalRecord:
        return await self._decide(approval_id, ApprovalStatus.REJECTED, reason)

    async def claim(self, approval_id: str) -> ApprovalRecord:
        """Reserve a decided, not yet applied approval for applying, so that two paths reaching
        it at once (a live decision and a session resuming, on one worker or two) cannot run the
        tool twice. A claim is never given back: once a tool may have started, running it again
        is the worse failure, so an applier that dies leaves the approval claimed, unapplied and
        visible, for a human. `mark_applied` records the result."""
        record = await self.get(approval_id)
        _check_appliable(record)
        if record.claimed_by is not None:
            raise ApprovalStateError(f"approval {approval_id} is already being applied")
        claimed = record.model_copy(update={"claimed_by": self.claimer})
        if not await self._store.replace_approval(claimed, expected=record):
            raise ApprovalStateError(f"approval {approval_id} is already being applied")
        return claimed

    async def mark_applied(self, approval_id: str, result: str) -> ApprovalRecord:
        """Record what the conversation was told, so a decision is never fed back twice."""
        record = await self.get(approval_id)
        _check_appliable(record)
        if record.claimed_by is None:  # applied without running anything (tool gone)
            claimed = record.model_copy(update={"claimed_by": self.claimer})
            if not await self._store.replace_approval(claimed, expected=record):
                raise ApprovalStateError(f"approval {approval_id} is already being applied")
            record = claimed
        applied = record.model_copy(update={"result": result, "applied": True})
        if not await self._store.replace_approval(applied, expected=record):
            raise ApprovalStateError(f"approval {approval_id} was already applied")
        return applied

    async def _decide(
        self, approval_id: str, status: ApprovalStatus, reason: str | None
    ) -> ApprovalRecord:
        record = await self.get(approval_id)
        if record.status != ApprovalStatus.PENDING:
            raise ApprovalStateError(f"approval {approval_id} was already {record.status}")
        decided = record.model_copy(
            update={"status": status, "reason": reason, "decided_at": time.time()}
        )
        if not await self._store.replace_approval(decided, expected=record):
            current = await self.get(approval_id)
            raise ApprovalStateError(f"approval {approval_id} was already {current.status}")
        _log.info("approval decided", approval_id=approval_id, tool=record.tool, status=status)
        subscribers = self._decision_subscribers.get(decided.conversation_id, [])
        await self._notify(subscribers, decided)
        return decided

    async def _notify(self, callbacks: list[ApprovalCallback], record: ApprovalRecord) -> None:
        # One broken listener must not undo a decision already persisted, nor starve the others.
        for callback in list(callbacks):
            try:
                await callback(record)
            except Exception:
                _log.exception("approval callback failed", approval_id=record.id)


def _check_appliable(record: ApprovalRecord) -> None:
    if record.status == ApprovalStatus.PENDING:
        raise ApprovalStateError(f"approval {record.id} is still pending")
    if record.applied:
        raise ApprovalStateError(f"approval {record.id} was already applied")


def _connection_of(ctx: RunContext) -> str | None:
    """The live connection a tool ran for, if its session has one (standalone sessions do too)."""
    connection = getattr(ctx.session, "connection_id", None)
    return connection if isinstance(connection, str) else None


def _add(callbacks: list[ApprovalCallback], callback: ApprovalCallback) -> Callable[[], None]:
    callbacks.append(callback)

    def remove() -> None:
        if callback in callbacks:
            callbacks.remove(callback)

    return remove
