"""The audit log: tool runs from a session's events, decisions from the approval route, and
`GET /api/audit` to read them back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.server.twilio_emulator import running
from voxline import Agent, Session, tool
from voxline.guardrails.audit import AuditTrail, record_decision
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.server import ServerConfig, create_app
from voxline.settings import Settings
from voxline.store.base import (
    ApprovalRecord,
    ApprovalStatus,
    AuditAction,
    AuditQuery,
    AuditRecord,
    Store,
)
from voxline.store.brokers import InProcessBroker
from voxline.store.sql import SqlStore

CARD = "4111 1111 1111 1111"


@tool
def charge(card: str, amount: float) -> str:
    """Charge a card.

    Args:
        card: The card number.
        amount: Dollars.
    """
    return f"charged {amount}"


@tool
def broken(order: str) -> str:
    """Always fails.

    Args:
        order: An order.
    """
    raise RuntimeError("the payment service is down")


async def test_tool_runs_are_logged_with_masked_arguments(store: Store, settings: Settings) -> None:
    llm = FakeLLM(
        [
            FakeReply(
                tool_calls=[
                    FakeToolCall("charge", {"card": CARD, "amount": 20.5}, id="call-1"),
                    FakeToolCall("broken", {"order": "A1"}, id="call-2"),
                ]
            ),
            FakeReply("Done."),
        ]
    )
    agent = Agent(name="billing", tools=[charge, broken])
    session = Session(agent, llm=llm, store=store, settings=settings, subject="phone:+1415")
    unsubscribe = AuditTrail(store).watch(session)
    await session.start(greet=False)
    await session.send_text("charge my card")
    await session.close()  # drains the bus: the entries are written
    unsubscribe()

    entries = {e.tool: e for e in await store.list_audit(AuditQuery(conversation_id=session.id))}
    assert set(entries) == {"charge", "broken"}
    ok = entries["charge"]
    assert ok.action == AuditAction.TOOL_RUN
    assert (ok.actor, ok.agent, ok.outcome) == ("agent:billing", "billing", "ok")
    assert ok.subject == "phone:+1415" and ok.connection_id == session.connection_id
    assert ok.details["arguments"] == {"card": "[card ending 1111]", "amount": 20.5}
    assert ok.details["call_id"] == "call-1" and ok.details["attempts"] == 1
    failed = entries["broken"]
    assert failed.outcome == "error"
    assert "payment service is down" in failed.details["error"]


async def test_a_decision_names_who_made_it(store: Store) -> None:
    @dataclass
    class Principal:
        key_id: str
        name: str

    record = ApprovalRecord(
        id="appr-1",
        conversation_id="conv-1",
        call_id="call-1",
        tool="refund",
        arguments={"order": "A1", "email": "jane@example.com"},
        status=ApprovalStatus.REJECTED,
        reason="not eligible",
    )
    await record_decision(store, record, Principal("key_7", "ops"))
    [entry] = await store.list_audit(AuditQuery(action=AuditAction.APPROVAL_DECIDED))
    assert entry.actor == "key:key_7 (ops)"
    assert (entry.tool, entry.outcome, entry.conversation_id) == ("refund", "rejected", "conv-1")
    assert entry.details == {
        "approval_id": "appr-1",
        "arguments": {"order": "A1", "email": "[email]"},
        "reason": "not eligible",
    }


async def test_an_unwritable_log_does_not_break_the_caller(tmp_path: Path) -> None:
    closed = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'never-opened.db'}")
    record = ApprovalRecord(id="a", conversation_id="c", call_id="x", tool="t")
    await record_decision(closed, record, "cli")  # logged, not raised


async def test_the_api_lists_the_log_newest_first_with_filters_and_pages(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    await store.open()
    for number in range(1, 6):
        await store.append_audit(
            AuditRecord(
                id=f"audit-{number}",
                at=100.0 + number,
                action=AuditAction.TOOL_RUN,
                actor="agent:front-desk",
                conversation_id="conv-a" if number % 2 else "conv-b",
                tool="lookup",
                outcome="ok",
            )
        )
    settings = Settings(data_dir=tmp_path, llm="fake", api_key="audit-test-key")
    config = ServerConfig(
        agents=[Agent(name="front-desk")],
        settings=settings,
        llm=lambda agent: FakeLLM(),
        store=store,
        broker=InProcessBroker(),
    )
    try:
        async with running(create_app(config)) as (base, _):
            headers = {"Authorization": "Bearer audit-test-key"}
            async with httpx.AsyncClient(base_url=base, headers=headers) as client:
                page = (await client.get("/api/audit", params={"limit": 2})).json()
                assert [e["id"] for e in page["entries"]] == ["audit-5", "audit-4"]
                assert page["next_until"] == 104.0
                rest = await client.get("/api/audit", params={"until": page["next_until"]})
                assert [e["id"] for e in rest.json()["entries"]] == [
                    "audit-3",
                    "audit-2",
                    "audit-1",
                ]
                assert rest.json()["next_until"] is None
                only_a = await client.get("/api/audit", params={"conversation_id": "conv-a"})
                assert [e["id"] for e in only_a.json()["entries"]] == [
                    "audit-5",
                    "audit-3",
                    "audit-1",
                ]
                bad = await client.get("/api/audit", params={"action": "nonsense"})
                assert bad.status_code == 422
            async with httpx.AsyncClient(base_url=base) as anonymous:
                assert (await anonymous.get("/api/audit")).status_code == 401
    finally:
        await store.close()
