"""Human approval through a live session: the call pauses, a human decides, the model is told."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxline import Agent, Session, tool
from voxline.conversation.turns import ToolCallTurn, ToolResultTurn
from voxline.providers.llm.base import ConfigurationError
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.settings import Settings
from voxline.store.base import ApprovalStatus
from voxline.store.sql import SqlStore

refunds: list[tuple[str, float]] = []


@tool(needs_approval=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order.

    Args:
        order_id: The order to refund.
        amount: How much, in dollars.
    """
    refunds.append((order_id, amount))
    return f"refunded ${amount:.2f} on {order_id}"


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[tuple[Session, FakeLLM, SqlStore]]:
    refunds.clear()
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'approvals.db'}")
    await store.open()
    llm = FakeLLM(
        [
            FakeReply(tool_calls=[FakeToolCall("refund", {"order_id": "A17", "amount": 20})]),
            "Let me check that with a colleague.",
            "Good news: your refund of twenty dollars is done.",
        ]
    )
    agent = Agent(name="shop", tools=[refund])
    s = Session(
        agent,
        llm=llm,
        store=store,
        settings=Settings(data_dir=tmp_path, llm="fake"),
        subject="phone:+14155550100",
    )
    await s.start()
    yield s, llm, store
    await s.close()
    await store.close()


async def test_approve_runs_the_tool_and_the_model_tells_the_user(
    session: tuple[Session, FakeLLM, SqlStore],
) -> None:
    s, llm, store = session
    requested: list[str] = []
    s.on("approval_requested", lambda approval_id, call, turn: requested.append(approval_id))
    assert await s.send_text("refund order A17") == "Let me check that with a colleague."
    assert refunds == []  # nothing ran before a human said yes
    [approval_id] = requested
    stored = await store.get_approval(approval_id)
    assert stored is not None and stored.status == ApprovalStatus.PENDING
    assert stored.tool == "refund" and stored.arguments == {"order_id": "A17", "amount": 20}
    assert stored.subject == "phone:+14155550100" and stored.conversation_id == s.id
    pending_result = next(t for t in s.turns if isinstance(t, ToolResultTurn))
    assert "approval" in pending_result.content.lower()

    await s.approvals.approve(approval_id)
    await s.wait_idle()
    assert refunds == [("A17", 20.0)]
    last = list(s.turns)[-1]
    assert (
        last.to_record()["data"]["content"] == "Good news: your refund of twenty dollars is done."
    )
    final_request = llm.requests[-1].messages
    assert any(
        m.role == "tool" and "refunded $20.00 on A17" in (m.content or "") for m in final_request
    )
    decided = await store.get_approval(approval_id)
    assert decided is not None and decided.status == ApprovalStatus.APPROVED and decided.applied


async def test_reject_tells_the_model_and_never_runs_the_tool(
    session: tuple[Session, FakeLLM, SqlStore],
) -> None:
    s, llm, store = session
    await s.send_text("refund order A17")
    [pending] = await s.approvals.list_pending()
    await s.approvals.reject(pending.id, "order is older than 90 days")
    await s.wait_idle()
    assert refunds == []
    replay = [t for t in s.turns if isinstance(t, ToolCallTurn) and t.approval_id == pending.id]
    assert len(replay) == 2  # the original call and the decision fed back
    assert json.loads(replay[-1].arguments) == {"order_id": "A17", "amount": 20}
    refusal = [m for m in llm.requests[-1].messages if m.role == "tool"][-1]
    assert "declined" in (refusal.content or "") and "90 days" in (refusal.content or "")
    decided = await store.get_approval(pending.id)
    assert decided is not None and decided.status == ApprovalStatus.REJECTED and decided.applied


async def test_the_agent_gates_tools_by_name_and_says_its_pending_message(
    tmp_path: Path,
) -> None:
    @tool
    def cancel_order(order_id: str) -> str:
        """Cancel an order.

        Args:
            order_id: The order.
        """
        return f"cancelled {order_id}"

    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'gated.db'}")
    await store.open()
    llm = FakeLLM(
        [FakeReply(tool_calls=[FakeToolCall("cancel_order", {"order_id": "B2"})]), "Checking."]
    )
    agent = Agent(
        name="gate",
        tools=[cancel_order],
        approvals={"tools": ["cancel_order"], "pending_message": "Hold on, asking my manager."},
    )
    s = Session(agent, llm=llm, store=store, settings=Settings(data_dir=tmp_path, llm="fake"))
    await s.start()
    await s.send_text("cancel B2")
    [pending] = await s.approvals.list_pending()
    assert pending.tool == "cancel_order"
    told = next(m for m in llm.requests[1].messages if m.role == "tool")
    assert "Hold on, asking my manager." in (told.content or "")
    await s.close()
    await store.close()
    with pytest.raises(ConfigurationError, match="nope"):
        Agent(name="bad", approvals={"tools": ["nope"]}).tools()
