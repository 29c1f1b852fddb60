"""`/api/sessions`: text conversations with an agent for bots and text UIs (and for bringing your
own speech recognition). Each message is served by whichever worker receives it: the worker
loads the conversation, answers, writes every turn and lets go, so nothing lives in one process.

A session with a `subject` continues that subject's conversation with the agent, on any channel:
a caller who phoned can be answered by text with the call's history in view.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from voxline.conversation.session import Session
from voxline.server.api.calls import turn_out
from voxline.server.api.context import Api, ApiContext, authorized
from voxline.server.api.errors import ApiError, error_responses
from voxline.server.api.models import SessionCreate, SessionMessage, SessionOut, SessionReply
from voxline.server.config import HostedAgent
from voxline.server.feed import describe
from voxline.server.live import SessionOptions
from voxline.store.base import ConversationRecord

log = structlog.get_logger("voxline.api.sessions")

router = APIRouter(
    tags=["sessions"],
    dependencies=[Depends(authorized)],
    responses=error_responses(401, 404, 413, 422, 429),
)

CHANNEL = "text"
STREAM_LIMIT = 10_000  # events of one reply buffered for a slow streaming client
NDJSON = "application/x-ndjson"


@router.post("/sessions", status_code=201, responses=error_responses(409))
async def create_session(body: SessionCreate, request: Request, api: Api) -> SessionOut:
    record = await api.store.get_agent(body.agent_id)
    if record is None:
        raise ApiError(404, f"no agent with id {body.agent_id!r}")
    agent = api.hub.host_record(record)
    if agent is None:
        raise ApiError(409, f"agent {record.name!r} no longer validates; update it first")
    hub = api.hub
    conversation_id = await hub.conversation_for(agent, body.subject, CHANNEL)
    resumed = await hub.has_history(conversation_id)
    if body.subject is None:  # an anonymous session: its record is ours to create
        await api.store.upsert_conversation(
            ConversationRecord(id=conversation_id, agent=agent.name, channel=CHANNEL)
        )
    greeting = agent.spec.greeting if body.greet and not resumed else None
    if greeting:
        async with hub.connect(
            agent, conversation_id, subject=body.subject, options=SessionOptions(CHANNEL)
        ) as s:
            await s.say(greeting)
    return SessionOut(
        id=conversation_id,
        agent_id=record.id,
        agent=agent.name,
        subject=body.subject,
        resumed=resumed,
        greeting=greeting,
        feed_url=api.url(request, f"/api/calls/{conversation_id}/feed", websocket=True),
    )


async def _session_agent(
    api: ApiContext, session_id: str
) -> tuple[ConversationRecord, HostedAgent]:
    record = await api.store.get_conversation(session_id)
    if record is None:
        raise ApiError(404, f"no session with id {session_id!r}")
    agent = await api.hub.resolve_agent(record.agent)
    if agent is None:
        raise ApiError(409, f"the agent of this session ({record.agent!r}) no longer exists")
    return record, agent


@router.post(
    "/sessions/{session_id}/messages",
    response_model=SessionReply,
    responses={
        **error_responses(409),
        200: {
            "content": {NDJSON: {}},
            "description": "With stream=true: one JSON event per line as the reply is made "
            "(the debug feed's events: bot_text deltas, tool_call, tool_result, ...), then a "
            'last line {"type": "reply", ...} shaped like the non-streamed answer.',
        },
    },
)
async def send_message(
    session_id: str,
    body: SessionMessage,
    api: Api,
    stream: Annotated[bool, Query(description="Stream events as NDJSON.")] = False,
) -> Response:
    """Send the user's message; get the agent's reply (after any tool calls) and the new turns."""
    record, agent = await _session_agent(api, session_id)
    if stream:
        lines = _stream(api, record, agent, body.text)
        return StreamingResponse(lines, media_type=NDJSON)
    async with api.hub.connect(
        agent, record.id, subject=record.subject, options=SessionOptions(CHANNEL)
    ) as session:
        reply = await _answer(session, body.text)
    return Response(reply.model_dump_json(), media_type="application/json")


async def _answer(session: Session, text: str) -> SessionReply:
    before = {turn.id for turn in session.turns}
    reply = await session.send_text(text)
    await session.wait_idle()
    added = [turn_out(t.to_record()) for t in session.turns if t.id not in before]
    return SessionReply(session_id=session.id, reply=reply, turns=added)


async def _stream(
    api: ApiContext, record: ConversationRecord, agent: HostedAgent, text: str
) -> AsyncIterator[str]:
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(STREAM_LIMIT)

    dropped = 0

    def collect(event: str, **payload: Any) -> None:
        nonlocal dropped
        described = describe(event, payload)
        if described is None:
            return
        try:
            events.put_nowait(described)
        except asyncio.QueueFull:
            dropped += 1

    async with api.hub.connect(
        agent, record.id, subject=record.subject, options=SessionOptions(CHANNEL)
    ) as session:
        unsubscribe = session.on("*", collect)
        answer = asyncio.create_task(_answer(session, text))
        try:
            while not (answer.done() and events.empty()):
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, answer}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield json.dumps(getter.result(), default=str) + "\n"
                else:
                    getter.cancel()
            reply = answer.result()
            yield json.dumps({"type": "reply", **reply.model_dump(mode="json")}) + "\n"
        finally:
            unsubscribe()
            if not answer.done():  # the client went away: the reply ends with it
                answer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answer
            if dropped:
                log.warning("stream client was slow: events dropped", dropped=dropped)
