"""Human approval end to end against the real SQLite store: request, decide, apply, re-read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voxline.providers.llm.base import ToolCallRequest
from voxline.store.base import ApprovalRecord, ApprovalStatus
from voxline.store.sql import SqlStore
from voxline.tools.approvals import ApprovalManager, ApprovalNotFoundError, ApprovalStateError
from voxline.tools.base import RunContext
from voxline.tools.decorator import tool
from voxline.tools.executor import PENDING_APPROVAL_MESSAGE, ToolExecutor

refunds: list[tuple[str, int]] = []


@tool(needs_approval=True)
def issue_refund(order_id: str, amount: int) -> str:
    """Refund part of an order.

    Args:
        order_id: The order to refund.
        amount: Amount in cents.
    """
    refunds.append((order_id, amount))
    return f"refunded {amount} on {order_id}"


@pytest.fixture(autouse=True)
def _no_refunds_yet() -> None:
    refunds.clear()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'approvals.db'}"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    opened = SqlStore(db_url)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def approvals(store: SqlStore) -> ApprovalManager:
    return ApprovalManager(store)


async def reread(db_url: str, approval_id: str) -> ApprovalRecord:
    """The record as a fresh connection sees it, so persistence is checked, not memory."""
    fresh = SqlStore(db_url)
    await fresh.open()
    try:
        record = await fresh.get_approval(approval_id)
    finally:
        await fresh.close()
    assert record is not None
    return record


def ctx(call_id: str = "call_1") -> RunContext:
    return RunContext(conversation_id="conv_1", call_id=call_id, subject="phone:+14155550100")


async def request_refund(executor: ToolExecutor, amount: int = 500) -> str:
    arguments = json.dumps({"order_id": "A17", "amount": amount})
    outcome = await executor.run(ToolCallRequest("call_1", "issue_refund", arguments), ctx())
    assert outcome.approval_id is not None
    assert (outcome.is_error, outcome.content) == (False, PENDING_APPROVAL_MESSAGE)
    return outcome.approval_id


async def test_approve_path_runs_the_tool_and_persists_every_step(
    approvals: ApprovalManager, db_url: str
) -> None:
    executor = ToolExecutor([issue_refund], approvals=approvals)
    announced: list[ApprovalRecord] = []
    decided: list[ApprovalRecord] = []

    async def on_pending(record: ApprovalRecord) -> None:
        announced.append(record)

    async def on_decision(record: ApprovalRecord) -> None:
        decided.append(record)

    approvals.on_pending(on_pending)
    approvals.subscribe("conv_1", on_decision)

    approval_id = await request_refund(executor)
    assert approval_id.startswith("apr_")
    assert refunds == []  # nothing runs before a human says yes
    pending = await reread(db_url, approval_id)
    assert (pending.status, pending.tool, pending.call_id) == (
        ApprovalStatus.PENDING,
        "issue_refund",
        "call_1",
    )
    assert pending.arguments == {"order_id": "A17", "amount": 500}
    assert (pending.conversation_id, pending.subject) == ("conv_1", "phone:+14155550100")
    assert [r.id for r in announced] == [approval_id]
    assert [r.id for r in await approvals.list_pending()] == [approval_id]

    approved = await approvals.approve(approval_id)
    assert approved.status is ApprovalStatus.APPROVED
    assert approved.decided_at is not None
    assert decided == [approved]
    assert (await reread(db_url, approval_id)).status is ApprovalStatus.APPROVED
    assert await approvals.list_pending() == []

    outcome = await executor.run_approved(approved, issue_refund, ctx("call_2"))
    assert refunds == [("A17", 500)]
    assert (outcome.content, outcome.is_error) == ("refunded 500 on A17", False)
    assert (outcome.call_id, outcome.approval_id) == ("call_2", approval_id)
    applied = await reread(db_url, approval_id)
    assert (applied.applied, applied.result) == (True, "refunded 500 on A17")


async def test_reject_path_never_runs_the_tool(approvals: ApprovalManager, db_url: str) -> None:
    executor = ToolExecutor([issue_refund], approvals=approvals)
    decided: list[ApprovalRecord] = []

    async def on_decision(record: ApprovalRecord) -> None:
        decided.append(record)

    approvals.subscribe("conv_1", on_decision)
    approval_id = await request_refund(executor)

    rejected = await approvals.reject(approval_id, "amount above policy")
    assert decided == [rejected]
    stored = await reread(db_url, approval_id)
    assert (stored.status, stored.reason) == (ApprovalStatus.REJECTED, "amount above policy")
    assert stored.decided_at is not None

    outcome = await executor.run_approved(rejected, issue_refund, ctx())
    assert refunds == []
    assert outcome.is_error
    assert "declined" in outcome.content and "amount above policy" in outcome.content
    assert (await reread(db_url, approval_id)).applied


async def test_decisions_are_checked_against_the_stored_state(approvals: ApprovalManager) -> None:
    executor = ToolExecutor([issue_refund], approvals=approvals)
    with pytest.raises(ApprovalNotFoundError, match="no approval with id 'apr_missing'"):
        await approvals.approve("apr_missing")

    approval_id = await request_refund(executor)
    pending = await approvals.get(approval_id)
    with pytest.raises(ApprovalStateError, match="still pending"):
        await executor.run_approved(pending, issue_refund, ctx())

    await approvals.approve(approval_id)
    with pytest.raises(ApprovalStateError, match="already approved"):
        await approvals.reject(approval_id, "too late")

    # a stale copy of the record must not make the tool run a second time
    await executor.run_approved(pending, issue_refund, ctx())
    with pytest.raises(ApprovalStateError, match="already applied"):
        await executor.run_approved(pending, issue_refund, ctx())
    assert refunds == [("A17", 500)]


async def test_concurrent_applies_run_the_tool_once(approvals: ApprovalManager) -> None:
    started = asyncio.Event()
    finish = asyncio.Event()
    runs = 0

    @tool(needs_approval=True)
    async def wire_money(amount: int) -> str:
        nonlocal runs
        runs += 1
        started.set()
        await finish.wait()
        return "sent"

    executor = ToolExecutor([wire_money], approvals=approvals)
    asked = await executor.run(ToolCallRequest("call_1", "wire_money", '{"amount": 5}'), ctx())
    assert asked.approval_id is not None
    record = await approvals.approve(asked.approval_id)

    first = asyncio.create_task(executor.run_approved(record, wire_money, ctx()))
    await started.wait()
    with pytest.raises(ApprovalStateError, match="already being applied"):
        await executor.run_approved(record, wire_money, ctx())
    finish.set()
    assert (await first).content == "sent"
    with pytest.raises(ApprovalStateError, match="already applied"):
        await executor.run_approved(record, wire_money, ctx())
    assert runs == 1


async def test_invalid_arguments_are_refused_before_a_human_is_asked(
    approvals: ApprovalManager,
) -> None:
    executor = ToolExecutor([issue_refund], approvals=approvals)
    outcome = await executor.run(
        ToolCallRequest("call_1", "issue_refund", '{"order_id": "A17"}'), ctx()
    )
    assert outcome.is_error
    assert outcome.approval_id is None
    assert "amount: field required" in outcome.content
    assert await approvals.list_pending() == []


async def test_subscribers_hear_only_their_conversation_until_they_unsubscribe(
    approvals: ApprovalManager, store: SqlStore
) -> None:
    heard: list[str] = []

    async def listener(record: ApprovalRecord) -> None:
        heard.append(record.id)

    async def broken(record: ApprovalRecord) -> None:
        raise RuntimeError("listener bug")

    approvals.subscribe("conv_1", broken)  # must not stop the others or undo the decision
    unsubscribe = approvals.subscribe("conv_1", listener)
    approvals.subscribe("conv_2", listener)
    ids = [await _pending(approvals, "conv_1"), await _pending(approvals, "conv_2")]

    await approvals.approve(ids[0])
    unsubscribe()
    unsubscribe()  # idempotent
    await approvals.approve(ids[1])
    third = await _pending(approvals, "conv_1")
    await approvals.reject(third)

    assert heard == [ids[0], ids[1]]
    assert (await approvals.get(ids[0])).status is ApprovalStatus.APPROVED
    assert [r.id for r in await store.list_approvals(status=ApprovalStatus.REJECTED)] == [third]


async def test_list_pending_filters_by_conversation(approvals: ApprovalManager) -> None:
    first = await _pending(approvals, "conv_1")
    await _pending(approvals, "conv_2")
    assert [r.id for r in await approvals.list_pending("conv_1")] == [first]
    assert len(await approvals.list_pending()) == 2


async def test_a_failing_store_is_an_outcome_not_an_exception(
    approvals: ApprovalManager, store: SqlStore
) -> None:
    executor = ToolExecutor([issue_refund], approvals=approvals)
    await store.close()
    outcome = await executor.run(
        ToolCallRequest("call_1", "issue_refund", '{"order_id": "A17", "amount": 1}'), ctx()
    )
    assert outcome.is_error
    assert outcome.content.startswith("the tool failed: could not ask for approval: ")


async def _pending(approvals: ApprovalManager, conversation_id: str) -> str:
    arguments: dict[str, Any] = {"order_id": "A1", "amount": 1}
    context = RunContext(conversation_id=conversation_id)
    record = await approvals.request("issue_refund", "call_x", arguments, context)
    return record.id
