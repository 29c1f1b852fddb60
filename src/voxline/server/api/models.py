"""Request and response bodies of the REST API; the OpenAPI schema is generated from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voxline.agents.spec import AgentSpec
from voxline.server.listeners import phone_address_problem, websocket_path_problem
from voxline.store.base import ListenerKind

MAX_TEXT = 8000  # characters of one injected or session message
MAX_IDLE_TIMEOUT = 30 * 24 * 3600.0


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- agents ---------------------------------------------------------------------------------


class AgentOut(BaseModel):
    id: str
    name: str
    version: int = Field(description="Counts updates; calls started after an update use it.")
    created_at: float
    updated_at: float
    spec: AgentSpec


class AgentList(BaseModel):
    agents: list[AgentOut]


class ProviderOut(BaseModel):
    provider: str
    available: bool = Field(description="Usable now: installed, and its key is configured.")
    spec: str = Field(description="How an agent's `llm` field names a model of this provider.")
    models: list[str] = Field(description="Examples of `llm` values (not an exhaustive list).")
    note: str | None = None


class ModelsOut(BaseModel):
    default: str = Field(description="The LLM used when an agent names none.")
    providers: list[ProviderOut]


# -- listeners ------------------------------------------------------------------------------


class ListenRequest(_Input):
    """Exactly one of `number` and `websocket`."""

    number: str | None = Field(
        None,
        description="An E.164 number (+14155550100), a prefix wildcard (+1415*) or * (any "
        "number that has no more specific listener).",
        max_length=32,
    )
    websocket: str | None = Field(
        None,
        description="A path under /ws/ that accepts ConversationRelay-style calls, e.g. "
        "/ws/support.",
        max_length=200,
    )
    idle_timeout: float | None = Field(
        None,
        ge=0,
        le=MAX_IDLE_TIMEOUT,
        description="Seconds the listener lives with no debug feed client connected; 0 keeps "
        "it until deleted. Default: the server's setting.",
    )

    @field_validator("number")
    @classmethod
    def _number(cls, value: str | None) -> str | None:
        if value is not None and (problem := phone_address_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("websocket")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (problem := websocket_path_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ListenRequest:
        if (self.number is None) == (self.websocket is None):
            raise ValueError("give exactly one of 'number' and 'websocket'")
        return self


class ListenerOut(BaseModel):
    id: str
    agent_id: str
    kind: ListenerKind
    address: str
    idle_timeout: float
    created_at: float
    last_seen_at: float
    feed_url: str = Field(
        description="WebSocket of this listener's live debug feed (authenticate with the "
        'Authorization header, or send {"type": "auth", "token": KEY} first).'
    )
    websocket_url: str | None = Field(None, description="WebSocket listeners: where calls connect.")
    voice_url: str | None = Field(
        None, description="Phone listeners: the voice webhook to configure at Twilio."
    )
    sms_url: str | None = Field(None, description="Phone listeners: the SMS webhook.")


class ListenerList(BaseModel):
    listeners: list[ListenerOut]


# -- calls and sessions ---------------------------------------------------------------------


class CallOut(BaseModel):
    id: str
    agent: str
    subject: str | None
    channel: str
    created_at: float
    updated_at: float
    feed_url: str


class CallList(BaseModel):
    calls: list[CallOut]


class TurnOut(BaseModel):
    id: str
    seq: int
    kind: str
    version: int
    created_at: float
    data: dict[str, Any]


class CallDetail(CallOut):
    turns: list[TurnOut]


class MessageIn(_Input):
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    role: Literal["user", "system"] = Field(
        "user",
        description="user: the agent hears it as the caller's words and answers; system: an "
        "instruction the agent acts on at once (e.g. 'tell the caller their taxi is here').",
    )


class MessageAccepted(BaseModel):
    call_id: str
    delivered: bool = True


class SessionCreate(_Input):
    agent_id: str = Field(min_length=1, max_length=255)
    subject: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Who the user is (e.g. user:42 or phone:+14155550100): sessions with the "
        "same subject and agent continue one conversation, across channels.",
    )
    greet: bool = Field(True, description="Add the agent's greeting to a new conversation.")


class SessionOut(BaseModel):
    id: str
    agent_id: str
    agent: str
    subject: str | None
    resumed: bool = Field(description="The conversation existed: its history continues.")
    greeting: str | None
    feed_url: str


class SessionMessage(_Input):
    text: str = Field(min_length=1, max_length=MAX_TEXT)


class SessionReply(BaseModel):
    session_id: str
    reply: str
    turns: list[TurnOut] = Field(description="Turns this message added, in order.")


# -- keys -----------------------------------------------------------------------------------


class KeyCreate(_Input):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Literal["approvals"]] = Field(
        default_factory=list,
        description="What the key may do beyond the REST API: 'approvals' lets it list and "
        "decide approvals at /approvals.",
    )


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    created_at: float
    revoked: bool
    scopes: list[str]


class KeyCreated(KeyOut):
    token: str = Field(description="The key itself. Shown once: only its hash is stored.")


class KeyList(BaseModel):
    keys: list[KeyOut]
