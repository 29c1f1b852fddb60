"""`/api/calls`: conversations (a phone call, an SMS thread, a text session: one history per
caller and agent) with their turns, and text injected into a call that is live right now.

A live call may be held by any worker. Injection tries this worker first, then asks the others
through the broker and reports 409 when none of them holds the call.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from voxline.server.api.context import Api, ApiContext, authorized
from voxline.server.api.errors import ApiError, error_responses
from voxline.server.api.models import (
    CallDetail,
    CallList,
    CallOut,
    MessageAccepted,
    MessageIn,
    TurnOut,
)
from voxline.server.hub import ConversationHub
from voxline.store.base import ConversationRecord

router = APIRouter(
    tags=["calls"], dependencies=[Depends(authorized)], responses=error_responses(401, 413, 429)
)

INJECT = "inject"
INJECT_TIMEOUT = 2.0  # seconds other workers get to say they hold the call
SCAN_LIMIT = 1000  # conversations read when filtering by agent


def call_out(api: ApiContext, request: Request, record: ConversationRecord) -> CallOut:
    return CallOut(
        id=record.id,
        agent=record.agent,
        subject=record.subject,
        channel=record.channel,
        created_at=record.created_at,
        updated_at=record.updated_at,
        feed_url=api.url(request, f"/api/calls/{record.id}/feed", websocket=True),
    )


def turn_out(record: dict[str, Any]) -> TurnOut:
    return TurnOut.model_validate(record)


async def load_call(api: ApiContext, call_id: str) -> ConversationRecord:
    record = await api.store.get_conversation(call_id)
    if record is None:
        raise ApiError(404, f"no call with id {call_id!r}")
    return record


@router.get("/calls", responses=error_responses(404, 422))
async def list_calls(
    request: Request,
    api: Api,
    agent_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> CallList:
    """Most recently active first."""
    if agent_id is None:
        records = await api.store.list_conversations(limit=limit)
    else:
        agent = await api.store.get_agent(agent_id)
        if agent is None:
            raise ApiError(404, f"no agent with id {agent_id!r}")
        found = await api.store.list_conversations(limit=SCAN_LIMIT)
        records = [r for r in found if r.agent == agent.name][:limit]
    return CallList(calls=[call_out(api, request, r) for r in records])


@router.get("/calls/{call_id}", responses=error_responses(404))
async def get_call(call_id: str, request: Request, api: Api) -> CallDetail:
    record = await load_call(api, call_id)
    turns = [turn_out(t) for t in await api.store.load_turns(record.id)]
    return CallDetail(**call_out(api, request, record).model_dump(), turns=turns)


def inject_here(hub: ConversationHub, call_id: str, text: str, role: str) -> bool:
    """Into the conversation's most recent live call on this worker, if it has one."""
    call = hub.calls.latest(call_id)
    if call is None:
        return False
    call.inject(text, as_system=role == "system")
    return True


def serve_injections(hub: ConversationHub) -> None:
    """Answer other workers' injection requests for calls live on this one."""

    async def handle(message: dict[str, Any]) -> dict[str, Any] | None:
        call_id, text, role = message.get("call_id"), message.get("text"), message.get("role")
        if not isinstance(call_id, str) or not isinstance(text, str) or not isinstance(role, str):
            return None
        return {"delivered": True} if inject_here(hub, call_id, text, role) else None

    hub.link.handle(INJECT, handle)


@router.post("/calls/{call_id}/messages", status_code=202, responses=error_responses(404, 409, 422))
async def inject(call_id: str, body: MessageIn, api: Api) -> MessageAccepted:
    """Put text into a live call: the agent answers aloud on the call. For conversations that
    are not live calls, use the sessions API."""
    await load_call(api, call_id)
    if not inject_here(api.hub, call_id, body.text, body.role):
        answer = await api.hub.link.request(
            INJECT, {"call_id": call_id, "text": body.text, "role": body.role}, INJECT_TIMEOUT
        )
        if answer is None:
            raise ApiError(
                409,
                f"call {call_id!r} is not live on any worker; to talk to a conversation that "
                "is not a live call, use POST /api/sessions",
            )
    return MessageAccepted(call_id=call_id)
