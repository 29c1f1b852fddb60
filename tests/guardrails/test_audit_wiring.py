"""The audit log of a running server: a tool an agent ran over SMS and the human decision on it,
with nothing logged by the test itself: `LiveSessions.open` watches each session
(`AuditTrail(store).watch(session)`) and the `/approvals` decide handler calls
`record_decision`."""

from __future__ import annotations

import httpx

from tests.server.conftest import API_KEY, EnvFactory, make_env, rest  # noqa: F401 - fixtures
from voxline.providers.llm.fake import FakeReply, FakeToolCall
from voxline.store.base import AuditAction, AuditQuery

REFUND = FakeReply(tool_calls=[FakeToolCall("refund", {"order_id": "A17", "amount": 20})])


async def test_a_tool_run_and_its_approval_are_audited(make_env: EnvFactory) -> None:  # noqa: F811
    async with make_env([REFUND, "Checking.", "Done."]) as env:
        assert await env.twilio.text("refund order A17 please") == ["Checking."]
        await env.idle()
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=env.twilio.base, headers=headers) as client:
            [pending] = (await client.get("/approvals")).json()["approvals"]
            decided = await client.post(f"/approvals/{pending['id']}", json={"decision": "approve"})
            assert decided.status_code == 200
        await env.rest.wait()  # the outcome is texted back: the approved run is over
        await env.idle()
        entries = await env.store.list_audit(AuditQuery(tool="refund"))

    outcomes = [(e.action, e.outcome) for e in reversed(entries)]
    assert outcomes == [
        (AuditAction.TOOL_RUN, "pending_approval"),
        (AuditAction.APPROVAL_DECIDED, "approved"),
        (AuditAction.TOOL_RUN, "ran_after_approval"),
    ]
    asked, decision, ran = reversed(entries)
    assert asked.actor == "agent:shop" and asked.subject == "phone:+14155550100"
    assert asked.details["arguments"] == {"order_id": "A17", "amount": 20}
    assert decision.actor.startswith("key:")
    assert decision.details["approval_id"] == pending["id"] == ran.details["approval_id"]
