"""Human approval over HTTP: the tool waits, a person decides, the caller hears or reads it."""

from __future__ import annotations

from typing import Any

import httpx

from tests.server import conftest
from tests.server.conftest import API_KEY, EnvFactory
from voxline.providers.llm.fake import FakeReply, FakeToolCall

REFUND = FakeReply(tool_calls=[FakeToolCall("refund", {"order_id": "A17", "amount": 20})])
CHECKING = "Let me check that with a colleague."
DONE = "Good news: your refund of twenty dollars is done."


async def api(
    base: str, method: str, path: str, *, key: str | None = API_KEY, json: Any = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with httpx.AsyncClient(base_url=base) as client:
        return await client.request(method, path, headers=headers, json=json)


async def test_approval_during_a_call_is_spoken_on_the_socket(make_env: EnvFactory) -> None:
    async with make_env([REFUND, CHECKING, DONE]) as env:
        async with env.twilio.relay(await env.twilio.call()) as twilio:
            await twilio.prompt("please refund order A17")
            assert await twilio.reply() == "One moment. " + CHECKING  # the tool filler first
            assert conftest.refunds == []

            refused = await api(env.twilio.base, "GET", "/approvals", key=None)
            assert refused.status_code == 401
            wrong = await api(env.twilio.base, "GET", "/approvals", key="guess")
            assert wrong.status_code == 401
            listed = await api(env.twilio.base, "GET", "/approvals")
            [pending] = listed.json()["approvals"]
            assert pending["tool"] == "refund" and pending["status"] == "pending"
            assert pending["arguments"] == {"order_id": "A17", "amount": 20}
            assert pending["subject"] == "phone:+14155550100"

            unauthorized = await api(
                env.twilio.base,
                "POST",
                f"/approvals/{pending['id']}",
                key=None,
                json={"decision": "approve"},
            )
            assert unauthorized.status_code == 401
            assert conftest.refunds == []
            decided = await api(
                env.twilio.base, "POST", f"/approvals/{pending['id']}", json={"decision": "approve"}
            )
            assert decided.status_code == 200 and decided.json()["status"] == "approved"
            assert await twilio.reply() == DONE  # the session speaks when the decision lands
            assert conftest.refunds == [("A17", 20.0)]

            again = await api(
                env.twilio.base, "POST", f"/approvals/{pending['id']}", json={"decision": "reject"}
            )
            assert again.status_code == 409
        tool_messages = [m for m in env.llm.requests[-1].messages if m.role == "tool"]
        assert "refunded $20.00 on A17" in (tool_messages[-1].content or "")


async def test_approval_after_an_sms_is_texted_back(make_env: EnvFactory) -> None:
    async with make_env([REFUND, CHECKING, DONE]) as env:
        assert await env.twilio.text("refund order A17 please") == [CHECKING]
        await env.idle()  # nobody holds the conversation while the human thinks
        [pending] = (await api(env.twilio.base, "GET", "/approvals")).json()["approvals"]
        response = await api(
            env.twilio.base, "POST", f"/approvals/{pending['id']}", json={"decision": "approve"}
        )
        assert response.status_code == 200
        [sent] = await env.rest.wait()
        assert sent == {"To": "+14155550100", "From": "+18005550101", "Body": DONE}
        assert conftest.refunds == [("A17", 20.0)]


async def test_a_rejection_is_explained_and_the_tool_never_runs(make_env: EnvFactory) -> None:
    refusal = "Sorry, the refund was declined: the order is too old."
    async with make_env([REFUND, CHECKING, refusal]) as env:
        await env.twilio.text("refund order A17 please")
        await env.idle()
        [pending] = (await api(env.twilio.base, "GET", "/approvals")).json()["approvals"]
        response = await api(
            env.twilio.base,
            "POST",
            f"/approvals/{pending['id']}",
            json={"decision": "reject", "reason": "older than 90 days"},
        )
        assert response.json()["reason"] == "older than 90 days"
        [sent] = await env.rest.wait()
        assert sent["Body"] == refusal
        assert conftest.refunds == []
        told = [m for m in env.llm.requests[-1].messages if m.role == "tool"][-1]
        assert "older than 90 days" in (told.content or "")


async def test_bad_requests_and_a_disabled_api(make_env: EnvFactory) -> None:
    async with make_env() as env:
        base = env.twilio.base
        assert (
            await api(base, "POST", "/approvals/apr_x", json={"decision": "maybe"})
        ).status_code == 400
        assert (
            await api(base, "POST", "/approvals/apr_x", json={"decision": "approve"})
        ).status_code == 404
    async with make_env(api_key=None) as env:
        response = await api(env.twilio.base, "GET", "/approvals")
        assert response.status_code == 403
        assert "VOXLINE_API_KEY" in response.json()["error"]
