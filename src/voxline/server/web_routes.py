"""The browser channel's doors: the talk page at `/` (with its script, worklet and style under
`/web/static/`) and the call socket at `/web/call` (protocol in `voxline.channels.web_protocol`).

Each socket is one conversation of its own (subject `web:<random>`), or resumes an earlier
browser conversation with `?conversation=ID`; phone and SMS conversations cannot be opened
this way. There is no login: a browser call is refused when its page came from another origin
(any web site the user visits could otherwise drive the agent and its tools on their behalf),
and docs/browser.md says not to expose the server without a proxy that authenticates.

The agent can end a call (`end_call`): the client gets an `end` event once the goodbye has
played, then the socket closes (1000). Transfers are not offered: there is no one to transfer a
browser to.

Speech models come from the server's shared pool (loaded once per process); serving the page
starts loading them, so they are usually warm by the time someone clicks to talk.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import secrets
from collections.abc import Iterable
from importlib import resources
from typing import Protocol
from urllib.parse import urlsplit

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxline.agents.spec import AgentSpec
from voxline.channels import web_protocol as wire
from voxline.channels.media_tools import browser_tools, read_until_over
from voxline.channels.web import Message, Outbox, WebCall
from voxline.conversation.session import Session
from voxline.conversation.turns import new_id
from voxline.server.config import HostedAgent
from voxline.server.hub import ConversationHub, SessionOptions
from voxline.voice.providers import SpeechProviders

log = structlog.get_logger("voxline.web")

CALL_PATH = "/web/call"
STATIC_PREFIX = "/web/static/"
SUBJECT_PREFIX = "web:"
ENDED_BY_AGENT = "the agent ended the call"
DRAIN_LIMIT = 5.0  # seconds the `end` event may take to reach a client that ended by the agent
NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008
SERVER_ERROR = 1011
_STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "mic-worklet.js": "text/javascript; charset=utf-8",
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


class _CallRefused(Exception):
    """Why a call cannot go ahead, in words for the person at the browser."""

    def __init__(self, message: str, code: int = POLICY_VIOLATION) -> None:
        super().__init__(message)
        self.code = code


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

    def web_calls(self, connection_id: str) -> WebCall | None:
        """The live browser call of a connection (for call-control tools)."""
        call = self.hub.calls.get(connection_id)
        return call if isinstance(call, WebCall) else None

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page),
            Route(STATIC_PREFIX + "{name}", self.static),
            WebSocketRoute(CALL_PATH, self.call),
        ]

    # -- the page --------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        name = request.query_params.get("agent") or self.default_agent
        agent = await self.hub.resolve_agent(name)
        if agent is None:
            return PlainTextResponse(f"no agent named {name!r}", status_code=404)
        self.speech.warm_up([agent.spec])
        body = _static("index.html").decode().replace("{{AGENT}}", html.escape(agent.name))
        return HTMLResponse(body, headers=_HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        media_type = _STATIC_TYPES.get(name)
        if media_type is None:
            return PlainTextResponse("not found", status_code=404)
        return Response(_static(name), media_type=media_type, headers=_HEADERS)

    # -- the call --------------------------------------------------------------------------
    async def call(self, websocket: WebSocket) -> None:
        if not self._origin_allowed(websocket):
            log.warning("browser call refused: page from another origin", origin=_origin(websocket))
            await websocket.close(code=POLICY_VIOLATION)  # before accept: the upgrade gets 403
            return
        await websocket.accept()
        async with self.hub.active_call():
            try:
                await self._serve(websocket)
            except _CallRefused as refused:
                log.warning("browser call refused", reason=str(refused))
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await websocket.send_text(wire.event("error", message=str(refused)))
                    await websocket.close(code=refused.code)
                return
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close()

    async def _serve(self, websocket: WebSocket) -> None:
        if self.hub.draining:
            raise _CallRefused("the server is shutting down", SERVER_ERROR)
        query = websocket.query_params
        name = query.get("agent") or self.default_agent
        agent = await self.hub.resolve_agent(name)
        if agent is None:
            raise _CallRefused(f"no agent named {name!r}")
        output_rate = _output_rate(query.get("output_rate"))
        conversation_id, subject = await self._conversation(agent, query.get("conversation"))
        try:
            speech = await self.speech.get(agent.spec)
        except Exception as exc:  # a missing extra or model; the pool retries on the next call
            log.exception("speech models could not be loaded", agent=agent.name)
            raise _CallRefused(f"speech models are not available: {exc}", SERVER_ERROR) from exc
        options = SessionOptions(
            "web",
            connection_id=new_id("web"),
            tools=browser_tools(agent.twilio, self.web_calls),
            on_open=_voice_delivery,
        )
        async with self.hub.connect(
            agent, conversation_id, subject=subject, options=options
        ) as session:
            call = WebCall(session, speech, output_rate=output_rate or speech.tts.sample_rate)
            self.hub.calls.add(session.connection_id, conversation_id, call)
            try:
                await self._run(websocket, call, agent)
            finally:
                self.hub.calls.remove(session.connection_id)

    async def _run(self, websocket: WebSocket, call: WebCall, agent: HostedAgent) -> None:
        session = call.session
        writer = asyncio.create_task(_pump(call.outbox, websocket))
        feed = self.hub.feeds.get(session.id)
        if feed is not None:
            feed.publish("call_started", channel="web", caller=session.subject)
        log.info("browser call started", agent=agent.name, conversation_id=session.id)
        try:
            await call.start(agent=agent.name, greeting=agent.spec.greeting)
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
            raise _CallRefused(f"no browser conversation {requested[:60]!r} with {agent.name}")
        return record.id, subject

    def _origin_allowed(self, websocket: WebSocket) -> bool:
        origin = _origin(websocket)
        if origin is None:
            return True  # not a browser: browsers always send Origin on a WebSocket upgrade
        hosts = {websocket.headers.get("host", "")}
        settings = self.hub.settings
        if settings.trust_forwarded_headers:
            hosts.add(websocket.headers.get("x-forwarded-host", ""))
        if settings.public_url:
            hosts.add(urlsplit(settings.public_url).netloc)
        return urlsplit(origin).netloc.lower() in {h.lower() for h in hosts if h}


def _origin(websocket: WebSocket) -> str | None:
    return websocket.headers.get("origin")


def _output_rate(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        rate = int(value)
    except ValueError:
        rate = 0
    if rate not in wire.OUTPUT_RATES:
        raise _CallRefused("output_rate must be a whole number of Hz from 8000 to 48000")
    return rate


def _voice_delivery(session: Session) -> None:
    """Only what the browser has played counts as heard (the pipeline requires this)."""
    session.delivery.auto = False


async def _read(websocket: WebSocket, call: WebCall) -> None:
    """Client frames into the call until the socket closes."""
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
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
