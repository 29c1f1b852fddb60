"""`/api/agents/{id}/listen`: deploy an agent on a phone number (or wildcard) or a WebSocket path.

The answer carries the listener's debug feed URL. A listener whose feed client stays away for its
idle timeout is reclaimed by the sweep (see `voxline.server.listeners`), so a client that dies
does not leak numbers; `DELETE` releases one at once.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request, Response

from voxline.conversation.turns import new_id
from voxline.server.api.agents import load_agent
from voxline.server.api.context import Api, ApiContext, authorized
from voxline.server.api.errors import ApiError, error_responses
from voxline.server.api.models import ListenerList, ListenerOut, ListenRequest
from voxline.store.base import ListenerKind, ListenerRecord
from voxline.store.errors import ConflictError, NotFoundError

router = APIRouter(
    tags=["listeners"],
    dependencies=[Depends(authorized)],
    responses=error_responses(401, 404, 413, 422, 429),
)


def listener_out(api: ApiContext, request: Request, record: ListenerRecord) -> ListenerOut:
    phone = record.kind == ListenerKind.PHONE
    return ListenerOut(
        id=record.id,
        agent_id=record.agent_id,
        kind=record.kind,
        address=record.address,
        idle_timeout=record.idle_timeout,
        created_at=record.created_at,
        last_seen_at=record.last_seen_at,
        feed_url=api.url(request, f"/api/listeners/{record.id}/feed", websocket=True),
        websocket_url=None if phone else api.url(request, record.address, websocket=True),
        voice_url=api.url(request, "/twilio/voice") if phone else None,
        sms_url=api.url(request, "/twilio/sms") if phone else None,
    )


@router.post("/agents/{agent_id}/listen", status_code=201, responses=error_responses(409))
async def listen(agent_id: str, body: ListenRequest, request: Request, api: Api) -> ListenerOut:
    """Route calls to this agent: Twilio calls and texts to `number` (configure the returned
    `voice_url`/`sms_url` at Twilio), or ConversationRelay-style calls at `websocket`."""
    agent = await load_agent(api, agent_id)
    now = time.time()
    record = ListenerRecord(
        id=new_id("listener"),
        agent_id=agent.id,
        kind=ListenerKind.PHONE if body.number is not None else ListenerKind.WEBSOCKET,
        address=body.number or body.websocket or "",
        idle_timeout=(
            body.idle_timeout
            if body.idle_timeout is not None
            else api.hub.settings.listener_idle_timeout
        ),
        created_at=now,
        last_seen_at=now,
    )
    try:
        await api.store.save_listener(record)
    except ConflictError as exc:
        raise ApiError(409, f"{record.address} already has a listener") from exc
    except NotFoundError as exc:
        raise ApiError(404, f"no agent with id {agent_id!r}") from exc
    return listener_out(api, request, record)


@router.get("/agents/{agent_id}/listen")
async def list_listeners(agent_id: str, request: Request, api: Api) -> ListenerList:
    agent = await load_agent(api, agent_id)
    records = await api.store.list_listeners(agent_id=agent.id)
    return ListenerList(listeners=[listener_out(api, request, r) for r in records])


@router.delete("/agents/{agent_id}/listen/{listener_id}", status_code=204)
async def unlisten(agent_id: str, listener_id: str, api: Api) -> Response:
    """Stop routing calls to the agent there; the listener's feed clients are disconnected."""
    record = await api.store.get_listener(listener_id)
    if record is None or record.agent_id != agent_id:
        raise ApiError(404, f"agent {agent_id!r} has no listener {listener_id!r}")
    await api.listeners.delete(record, "deleted")
    return Response(status_code=204)
