"""The browser channel's doors: the talk page at `/` (with its script, worklet and style under
`/web/static/`) and the call socket at `/web/call` (protocol in `voxline.channels.web_protocol`).

Each socket is one conversation of its own (subject `web:<random>`), or resumes an earlier
browser conversation with `?conversation=ID`; phone and SMS conversations cannot be opened
this way. Only agents open to the web (`AgentSpec.web`; by default the server's own agents, not
those defined over the API) can be opened, and a page from another origin is refused.

Who may call (docs/browser.md): a client holding a session token (`POST /api/web/tokens`,
voxline.server.web_tokens) gets the agent and conversation the token names, nothing else; a
client holding an API key gets any web agent (local development, your own backend); with
`VOXLINE_WEB_OPEN_LOCALHOST` a client on this machine needs neither, so `make run` and a
browser on 127.0.0.1 just work. The credential travels as a WebSocket subprotocol
(`voxline.token.<T>`, beside `voxline`, which the server selects) or as `Authorization:
Bearer`, never in the URL, which ends up in access logs. Wrong credentials count against the
client's address (voxline.server.auth_throttle), and each address has a limit on calls at once
and a token bucket for new ones, so one client cannot occupy every speech model.

Refusals happen after the upgrade is accepted: a browser's WebSocket cannot see an HTTP status,
so the page could not tell the person why. The client gets one `error` event and a close code
with the reason (1008 refused, 1013 try again later, 1011 a server-side problem). Only a page
from another origin is refused at the upgrade (403): its script has no business reading why.

The same rules admit a WebRTC call (`POST /web/rtc/offer`, server/webrtc_routes.py, which uses
`admit`, the slots, `plan_call` and `session_options` from here): one door, two transports.

The agent can end a call (`end_call`): the client gets an `end` event once the goodbye has
played, then the socket closes (1000). Transfers are not offered: there is no one to transfer a
browser to.

Speech models come from the server's shared pool (loaded once per process); serving the page
starts loading them, so they are usually warm by the time someone clicks to talk. An agent whose
`llm` is a Realtime model loads none: the model hears and speaks (`channels/realtime_web.py`),
with the same page and protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import math
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Protocol
from urllib.parse import urlsplit

import structlog
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxline.agents.spec import AgentSpec
from voxline.channels import web_protocol as wire
from voxline.channels.media_tools import browser_tools, read_until_over
from voxline.channels.realtime_web import RealtimeWebCall
from voxline.channels.web import Message, Outbox, WebCall
from voxline.conversation.session import Session
from voxline.conversation.turns import new_id
from voxline.providers.llm.base import ConfigurationError
from voxline.providers.realtime.client import RealtimeConnectError
from voxline.providers.realtime.config import PCM24
from voxline.providers.realtime.registry import realtime_part
from voxline.server.api.auth import ApiKeys, bearer_token
from voxline.server.api.limits import RateLimiter
from voxline.server.auth_throttle import (
    AuthThrottle,
    client_address,
    is_local_client,
    throttle_for,
)
from voxline.server.config import HostedAgent
from voxline.server.hub import ConversationHub, SessionOptions
from voxline.server.socket_frames import received
from voxline.server.web_tokens import (
    WebClaims,
    WebTokenError,
    WebTokens,
    looks_like_web_token,
    open_to_web,
)
from voxline.store.base import PlatformStore
from voxline.voice.providers import SpeechProviders

log = structlog.get_logger("voxline.web")

CALL_PATH = "/web/call"
RTC_PREFIX = "/web/rtc/"  # the WebRTC door: POST offer, DELETE a call (server/webrtc_routes.py)
AGENTS_PATH = "/web/agents"
SUBPROTOCOL = "voxline"  # what the server selects when a client offers it
TOKEN_SUBPROTOCOL = "voxline.token."  # + the session token or API key, offered beside it
STATIC_PREFIX = "/web/static/"
SUBJECT_PREFIX = "web:"
ENDED_BY_AGENT = "the agent ended the call"
DRAIN_LIMIT = 5.0  # seconds the `end` event may take to reach a client that ended by the agent
NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008
SERVER_ERROR = 1011
TRY_AGAIN_LATER = 1013
MAX_REASON_BYTES = 120  # a close reason may be 123 bytes of UTF-8
NEEDS_CREDENTIAL = (
    "this server needs a session token for browser calls: open the link you were given, or "
    "ask its operator for one"
)
_STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "mic-worklet.js": "text/javascript; charset=utf-8",
    "panels.js": "text/javascript; charset=utf-8",
    "rtc.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # Everything the page uses comes from this server; the browser enforces it.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
}


class CallRefused(Exception):
    """Why a call cannot go ahead, in words for the person at the browser."""

    def __init__(self, message: str, code: int = POLICY_VIOLATION) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Admission:
    """Why a client may call: a session token's claims, an API key, or being local."""

    client: str
    how: str  # "token", "api key" or "localhost"
    claims: WebClaims | None = None


@dataclass(frozen=True)
class CallPlan:
    """What an admitted browser call opens, before its session does (`WebRoutes.plan_call`)."""

    agent: HostedAgent
    conversation_id: str
    subject: str
    realtime: str | None  # the agent's Realtime model, which hears and speaks for itself
    speech: SpeechProviders | None  # the shared speech models, for every other agent
    output_rate: int | None  # what the client asked for, if anything


def _static(name: str) -> bytes:
    return resources.files("voxline.server").joinpath("static", name).read_bytes()


class SpeechSource(Protocol):
    """Where calls get their speech models (`SpeechPool`: loaded once, shared by channels)."""

    async def get(self, spec: AgentSpec) -> SpeechProviders: ...

    def warm_up(self, specs: Iterable[AgentSpec]) -> None: ...


class WebRoutes:
    def __init__(
        self,
        hub: ConversationHub,
        default_agent: str,
        speech: SpeechSource,
    ) -> None:
        self.hub = hub
        self.default_agent = default_agent
        self.speech = speech
        settings = hub.settings
        self.tokens = WebTokens.from_settings(settings)
        self._new_calls = RateLimiter(settings.web_call_rate_limit, settings.web_call_rate_burst)
        self._calls_of: dict[str, int] = {}  # calls in progress per client address

    def web_calls(self, connection_id: str) -> WebCall | None:
        """The live browser call of a connection (for call-control tools)."""
        call = self.hub.calls.get(connection_id)
        return call if isinstance(call, WebCall) else None

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page),
            Route(AGENTS_PATH, self.agents),
            Route(STATIC_PREFIX + "{name}", self.static),
            WebSocketRoute(CALL_PATH, self.call),
            *self._webrtc_routes(),
        ]

    def _webrtc_routes(self) -> list[BaseRoute]:
        """The WebRTC door (server/webrtc_routes.py), or, without the `webrtc` extra, an
        answer that sends the page to the socket."""
        try:
            from voxline.server.webrtc_routes import WebRtcRoutes
        except ImportError as exc:  # aiortc is an extra
            reason = (
                f"WebRTC is not installed on this server ({exc.name}): "
                "pip install 'voxline[webrtc]'"
            )

            async def unavailable(request: Request) -> Response:
                return JSONResponse({"error": reason, "fallback": "ws"}, status_code=501)

            return [Route(RTC_PREFIX + "{rest:path}", unavailable, methods=["POST", "DELETE"])]
        return WebRtcRoutes(self).routes()

    # -- the page --------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        name = request.query_params.get("agent") or self.default_agent
        agent = await self.hub.resolve_agent(name)
        if agent is None or not open_to_web(agent, self.hub.agents):
            return PlainTextResponse(f"no agent named {name!r}", status_code=404)
        if realtime_part(agent.spec.llm) is None:
            self.speech.warm_up([agent.spec])
        body = _static("index.html").decode().replace("{{AGENT}}", html.escape(agent.name))
        return HTMLResponse(body, headers=_HEADERS)

    async def agents(self, request: Request) -> Response:
        """The page's agent picker: the hosted agents open to the web, for a browser on this
        machine in open-localhost mode. Anyone else sees the default agent only: a session
        token opens one agent, so listing the others would tell strangers what this server
        runs."""
        hosted = self.hub.agents
        local = self.hub.settings.web_open_localhost and is_local_client(request)
        names = sorted(hosted) if local else [self.default_agent]
        listed = [
            {"name": name} for name in names if name in hosted and open_to_web(hosted[name], hosted)
        ]
        return JSONResponse({"default": self.default_agent, "agents": listed}, headers=_HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        media_type = _STATIC_TYPES.get(name)
        if media_type is None:
            return PlainTextResponse("not found", status_code=404)
        return Response(_static(name), media_type=media_type, headers=_HEADERS)

    # -- the call --------------------------------------------------------------------------
    async def call(self, websocket: WebSocket) -> None:
        if not self.origin_allowed(websocket):
            log.warning("browser call refused: page from another origin", origin=_origin(websocket))
            await websocket.close(code=POLICY_VIOLATION)  # before accept: the upgrade gets 403
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        client = client_address(websocket, self.hub.settings)
        async with self.hub.active_call():
            try:
                admission = await self.admit(websocket, client)
                self.claim_slot(client)
                try:
                    self.take_new_call(client)
                    await self._serve(websocket, admission)
                finally:
                    self.release_slot(client)
            except CallRefused as refused:
                log.warning("browser call refused", reason=str(refused), client=client)
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await websocket.send_text(wire.event("error", message=str(refused)))
                    await websocket.close(code=refused.code, reason=_reason(str(refused)))
                return
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close()

    # -- who may call ----------------------------------------------------------------------
    @property
    def _throttle(self) -> AuthThrottle:
        return throttle_for(self.hub, self.hub.settings)

    async def admit(self, connection: HTTPConnection, client: str) -> Admission:
        """Check the client's credential; raises `CallRefused` with what the person can do."""
        credential = _credential(connection)
        if credential is None:
            if self.hub.settings.web_open_localhost and is_local_client(connection):
                return Admission(client, "localhost")
            raise CallRefused(NEEDS_CREDENTIAL)
        if (cooling := self._throttle.retry_after(client)) > 0:
            raise CallRefused(
                "too many failed attempts from this address; try again in "
                f"{max(1, math.ceil(cooling))}s",
                TRY_AGAIN_LATER,
            )
        if looks_like_web_token(credential):
            try:
                if self.tokens is None:
                    raise WebTokenError("session tokens are off on this server")
                claims = self.tokens.verify(credential)
            except WebTokenError as exc:
                self._throttle.failed(client)
                raise CallRefused(f"{exc}: ask for a new link") from exc
            return Admission(client, "token", claims)
        if not await self._key_is_valid(credential, client):
            raise CallRefused("the API key is not valid")
        return Admission(client, "api key")

    async def _key_is_valid(self, credential: str, client: str) -> bool:
        settings = self.hub.settings
        store = self.hub.store
        if isinstance(store, PlatformStore):
            keys = ApiKeys(store, settings.api_key, self._throttle)
            return await keys.authenticate(credential, client=client) is not None
        bootstrap = settings.api_key  # an embedding app's store keeps no keys
        if bootstrap is not None and _same(credential, bootstrap.get_secret_value()):
            return True
        self._throttle.failed(client)
        return False

    def claim_slot(self, client: str) -> None:
        limit = self.hub.settings.web_max_calls_per_client
        held = self._calls_of.get(client, 0)
        if held >= limit:
            raise CallRefused(
                f"this address already has {held} browser calls open; end one first",
                TRY_AGAIN_LATER,
            )
        self._calls_of[client] = held + 1

    def release_slot(self, client: str) -> None:
        held = self._calls_of.get(client, 0) - 1
        if held > 0:
            self._calls_of[client] = held
        else:
            self._calls_of.pop(client, None)

    def take_new_call(self, client: str) -> None:
        wait = self._new_calls.take(client)
        if wait > 0:
            raise CallRefused(
                f"too many new calls from this address; try again in {max(1, math.ceil(wait))}s",
                TRY_AGAIN_LATER,
            )

    # -- the call --------------------------------------------------------------------------
    async def plan_call(self, query: Mapping[str, str], claims: WebClaims | None) -> CallPlan:
        """What an admitted call opens (agent, conversation, speech), whichever door it came
        through; raises `CallRefused` with what the person can do about it."""
        if self.hub.draining:
            raise CallRefused("the server is shutting down", SERVER_ERROR)
        name = query.get("agent") or (claims.agent if claims else self.default_agent)
        if claims is not None and name != claims.agent:
            raise CallRefused(f"this session token is for agent {claims.agent!r}, not {name!r}")
        agent = await self.hub.resolve_agent(name)
        if agent is None or not open_to_web(agent, self.hub.agents):
            raise CallRefused(f"no agent named {name!r} is open to the browser")
        output_rate = _output_rate(query.get("output_rate"))
        requested = _bound_conversation(claims, query.get("conversation"))
        conversation_id, subject = await self._conversation(agent, requested)
        realtime = realtime_part(agent.spec.llm)  # the model hears and speaks: no speech models
        speech = None if realtime is not None else await self._speech_for(agent)
        return CallPlan(agent, conversation_id, subject, realtime, speech, output_rate)

    def session_options(self, plan: CallPlan) -> SessionOptions:
        return SessionOptions(
            "web",
            connection_id=new_id("web"),
            tools=browser_tools(plan.agent.twilio, self.web_calls),
            on_open=_voice_delivery if plan.realtime is None else None,
        )

    async def _serve(self, websocket: WebSocket, admission: Admission) -> None:
        claims = admission.claims
        plan = await self.plan_call(websocket.query_params, claims)
        agent, speech, realtime = plan.agent, plan.speech, plan.realtime
        output_rate, conversation_id = plan.output_rate, plan.conversation_id
        async with self.hub.connect(
            agent, conversation_id, subject=plan.subject, options=self.session_options(plan)
        ) as session:
            call: WebCall
            if speech is not None:
                call = WebCall(session, speech, output_rate=output_rate or speech.tts.sample_rate)
            else:
                assert realtime is not None
                call = _realtime_call(session, realtime, output_rate or PCM24.rate)
            self.hub.calls.add(session.connection_id, conversation_id, call)
            log.info("browser call admitted", how=admission.how, client=admission.client)
            try:
                await self._run(websocket, call, agent, self.bound_token(claims, session.id))
            finally:
                self.hub.calls.remove(session.connection_id)

    async def _speech_for(self, agent: HostedAgent) -> SpeechProviders:
        try:
            return await self.speech.get(agent.spec)
        except Exception as exc:  # a missing extra or model; the pool retries on the next call
            log.exception("speech models could not be loaded", agent=agent.name)
            raise CallRefused(f"speech models are not available: {exc}", SERVER_ERROR) from exc

    def bound_token(self, claims: WebClaims | None, conversation_id: str) -> str | None:
        """For a token that names no conversation: one bound to the conversation it started,
        expiring with it, so the page can reconnect to this conversation and no other."""
        if claims is None or claims.conversation is not None or self.tokens is None:
            return None
        token, _ = self.tokens.sign(WebClaims(claims.agent, conversation_id, claims.expires))
        return token

    async def _run(
        self, websocket: WebSocket, call: WebCall, agent: HostedAgent, bound_token: str | None
    ) -> None:
        session = call.session
        writer = asyncio.create_task(_pump(call.outbox, websocket))
        feed = self.hub.feeds.get(session.id)
        if feed is not None:
            feed.publish("call_started", channel="web", caller=session.subject)
        log.info("browser call started", agent=agent.name, conversation_id=session.id)
        try:
            try:
                await call.start(agent=agent.name, greeting=agent.spec.greeting)
            except RealtimeConnectError as exc:
                log.error("browser call ended: Realtime model unreachable", error=str(exc))
                raise CallRefused(
                    "the agent's voice model cannot be reached", SERVER_ERROR
                ) from exc
            if bound_token is not None:  # after `hello`, which stays the first event
                call.outbox.put(wire.event("token", token=bound_token, conversation_id=session.id))
            await read_until_over(_read(websocket, call), call.over)
            if call.over.is_set():  # the `end` event goes out before the socket closes
                await asyncio.wait({writer}, timeout=DRAIN_LIMIT)
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await websocket.close(NORMAL_CLOSURE, ENDED_BY_AGENT)
        finally:
            await call.finish()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if feed is not None:
                feed.publish("call_ended", channel="web", turns=len(session.turns))
        log.info("browser call finished", agent=agent.name, turns=len(session.turns))

    async def _conversation(self, agent: HostedAgent, requested: str | None) -> tuple[str, str]:
        """A new conversation, or the browser conversation `requested` if it is one."""
        if not requested:
            return new_id("conv"), f"{SUBJECT_PREFIX}{secrets.token_hex(8)}"
        record = await self.hub.store.get_conversation(requested)
        subject = record.subject if record is not None else None
        if (
            record is None
            or record.agent != agent.name
            or subject is None
            or (not subject.startswith(SUBJECT_PREFIX))
        ):
            raise CallRefused(f"no browser conversation {requested[:60]!r} with {agent.name}")
        return record.id, subject

    def origin_allowed(self, connection: HTTPConnection) -> bool:
        origin = _origin(connection)
        if origin is None:
            return True  # not a browser: browsers send Origin on an upgrade and on a POST
        hosts = {connection.headers.get("host", "")}
        settings = self.hub.settings
        if settings.trust_forwarded_headers:
            hosts.add(connection.headers.get("x-forwarded-host", ""))
        if settings.public_url:
            hosts.add(urlsplit(settings.public_url).netloc)
        return urlsplit(origin).netloc.lower() in {h.lower() for h in hosts if h}


def _credential(connection: HTTPConnection) -> str | None:
    """The session token or API key a client sent: as a subprotocol (what a browser's socket
    can send), or as `Authorization: Bearer` (a page's fetch, and any other client)."""
    for offered in connection.scope.get("subprotocols") or []:
        if isinstance(offered, str) and offered.startswith(TOKEN_SUBPROTOCOL):
            return offered[len(TOKEN_SUBPROTOCOL) :] or None
    return bearer_token(connection.headers.get("authorization", ""))


def _bound_conversation(claims: WebClaims | None, requested: str | None) -> str | None:
    """The conversation to open: what the query asks for, held to what a token allows."""
    if claims is None:
        return requested
    if claims.conversation is None:
        if requested:
            raise CallRefused("this session token can only start a new conversation")
        return None
    if requested and requested != claims.conversation:
        raise CallRefused("this session token is for another conversation")
    return claims.conversation


def _reason(message: str) -> str:
    """A close reason within the protocol's 123 bytes."""
    return message.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _origin(connection: HTTPConnection) -> str | None:
    return connection.headers.get("origin")


def _output_rate(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        rate = int(value)
    except ValueError:
        rate = 0
    if rate not in wire.OUTPUT_RATES:
        raise CallRefused("output_rate must be a whole number of Hz from 8000 to 48000")
    return rate


def _realtime_call(session: Session, spec: str, output_rate: int) -> WebCall:
    """A browser call spoken by the agent's Realtime model (`channels/realtime_web.py`)."""
    try:
        return RealtimeWebCall(session, spec, output_rate=output_rate)
    except ConfigurationError as exc:
        log.error("browser call refused: Realtime model misconfigured", error=str(exc))
        raise CallRefused(
            "the agent's voice model is not set up on this server", SERVER_ERROR
        ) from exc


def _voice_delivery(session: Session) -> None:
    """Only what the browser has played counts as heard (the pipeline requires this)."""
    session.delivery.auto = False


async def _read(websocket: WebSocket, call: WebCall) -> None:
    """Client frames into the call until the socket closes."""
    async for message in received(websocket):
        data = message.get("bytes")
        if data is not None:
            call.handle_audio(data)
        elif (text := message.get("text")) is not None:
            call.handle_text(text)


async def _pump(outbox: Outbox, websocket: WebSocket) -> None:
    while True:
        item: Message | None = await outbox.get()
        if item is None:  # closed and drained
            return
        try:
            if isinstance(item, bytes):
                await websocket.send_bytes(item)
            else:
                await websocket.send_text(item)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
