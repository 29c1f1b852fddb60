"""Human approval of sensitive tool calls: requests persisted, decisions routed back.

A call that needs approval is stored as a pending `ApprovalRecord` and the conversation goes on.
A human (through the API) approves or rejects it later, maybe after a restart, so the record in
the store is the truth; this manager validates each decision against it, persists the change,
and tells the conversation's subscribers so the session can run the tool or report the refusal.
"""

from __future__ import annotations

import asyncio
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
        # Serialises read-check-write, so two clicks on "approve" cannot both succeed.
        self._lock = asyncio.Lock()
        self._claimed: set[str] = set()

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
        it at once (a live decision and a session resuming) cannot run the tool twice.

        Pair with `release` in a `finally`; `mark_applied` records the result.
        """
        async with self._lock:
            record = await self.get(approval_id)
            _check_appliable(record)
            if approval_id in self._claimed:
                raise ApprovalStateError(f"approval {approval_id} is already being applied")
            self._claimed.add(approval_id)
        return record

    def release(self, approval_id: str) -> None:
        self._claimed.discard(approval_id)

    async def mark_applied(self, approval_id: str, result: str) -> ApprovalRecord:
        """Record what the conversation was told, so a decision is never fed back twice."""
        async with self._lock:
            record = await self.get(approval_id)
            _check_appliable(record)
            applied = record.model_copy(update={"result": result, "applied": True})
            await self._store.save_approval(applied)
        return applied

    async def _decide(
        self, approval_id: str, status: ApprovalStatus, reason: str | None
    ) -> ApprovalRecord:
        async with self._lock:
            record = await self.get(approval_id)
            if record.status != ApprovalStatus.PENDING:
                raise ApprovalStateError(f"approval {approval_id} was already {record.status}")
            decided = record.model_copy(
                update={"status": status, "reason": reason, "decided_at": time.time()}
            )
            await self._store.save_approval(decided)
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


def _add(callbacks: list[ApprovalCallback], callback: ApprovalCallback) -> Callable[[], None]:
    callbacks.append(callback)

    def remove() -> None:
        if callback in callbacks:
            callbacks.remove(callback)

    return remove
