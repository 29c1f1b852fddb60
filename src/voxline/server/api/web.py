"""`/api/web/tokens`: session tokens that let a browser without an API key talk to one agent.

Your backend, which holds an API key, asks for a token when one of your users should talk to an
agent, and gives the user the `url` it gets back: the talk page with the token in the URL's
fragment (browsers never send a fragment, so it stays out of access logs), which the page hands
to `/web/call`. The token admits only the agent it names, and only the conversation it names
when it names one (voxline.server.web_tokens), until it expires. Only agents open to the web
get tokens: a token for an agent that nobody offered to browsers would be a way around that.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from voxline.server.api.context import Api, authorized
from voxline.server.api.errors import ApiError, error_responses
from voxline.server.config import HostedAgent
from voxline.server.web_routes import CALL_PATH, SUBJECT_PREFIX
from voxline.server.web_tokens import MAX_TTL, WebTokens, open_to_web

router = APIRouter(
    tags=["web"],
    dependencies=[Depends(authorized)],
    responses=error_responses(401, 404, 409, 413, 422, 429),
)


class WebTokenCreate(BaseModel):
    """Exactly one of `agent_id` and `agent`."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str | None = Field(
        None, min_length=1, max_length=255, description="An agent defined over the API."
    )
    agent: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Any agent by name, those hosted from the server's files included.",
    )
    conversation: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="An earlier browser conversation with this agent: the token opens it and "
        "no other. Empty: the token starts new conversations.",
    )
    ttl: float | None = Field(
        None,
        gt=0,
        le=MAX_TTL,
        description="Seconds the token lives; default VOXLINE_WEB_TOKEN_TTL (600).",
    )

    @model_validator(mode="after")
    def _one_agent(self) -> WebTokenCreate:
        if (self.agent_id is None) == (self.agent is None):
            raise ValueError("give exactly one of agent_id and agent")
        return self


class WebTokenOut(BaseModel):
    token: str = Field(
        description="Offer it to /web/call as the subprotocol `voxline.token.<token>` (beside "
        "`voxline`), or send it as `Authorization: Bearer <token>`."
    )
    agent: str
    conversation: str | None
    expires_at: float = Field(description="Unix time after which the token opens nothing.")
    url: str = Field(description="The talk page for this agent, the token in the fragment.")
    websocket_url: str = Field(description="The call socket for this agent.")


@router.post("/web/tokens", status_code=201)
async def create_web_token(body: WebTokenCreate, request: Request, api: Api) -> WebTokenOut:
    """A session token for one agent (and optionally one conversation) in the browser."""
    tokens = WebTokens.from_settings(api.hub.settings)
    if tokens is None:
        raise ApiError(
            409,
            "session tokens need a signing key: set VOXLINE_CALL_TOKEN_SECRET (or "
            "VOXLINE_API_KEY) on every worker",
        )
    agent = await _agent(api, body)
    if body.conversation is not None:
        await _check_conversation(api, agent, body.conversation)
    token, claims = tokens.mint(agent.name, body.conversation, ttl=body.ttl)
    page = {"agent": agent.name}
    if claims.conversation is not None:
        page["conversation"] = claims.conversation
    return WebTokenOut(
        token=token,
        agent=agent.name,
        conversation=claims.conversation,
        expires_at=claims.expires,
        url=f"{api.url(request, '/')}?{urlencode(page)}#{urlencode({'token': token})}",
        websocket_url=f"{api.url(request, CALL_PATH, websocket=True)}?"
        + urlencode({"agent": agent.name}),
    )


async def _agent(api: Api, body: WebTokenCreate) -> HostedAgent:
    hub = api.hub
    if body.agent_id is not None:
        agent = await hub.agent_by_id(body.agent_id)
        wanted = f"no agent with id {body.agent_id!r}"
    else:
        agent = await hub.resolve_agent(body.agent or "")
        wanted = f"no agent named {body.agent!r}"
    if agent is None:
        raise ApiError(404, wanted)
    if not open_to_web(agent, hub.agents):
        raise ApiError(
            409,
            f'agent {agent.name!r} is not open to the browser: set "web": true in its spec',
        )
    return agent


async def _check_conversation(api: Api, agent: HostedAgent, conversation: str) -> None:
    record = await api.hub.store.get_conversation(conversation)
    subject = record.subject if record is not None else None
    if (
        record is None
        or record.agent != agent.name
        or subject is None
        or not subject.startswith(SUBJECT_PREFIX)
    ):
        raise ApiError(404, f"no browser conversation {conversation[:60]!r} with {agent.name}")
