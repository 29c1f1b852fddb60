"""Twilio's doors into the server: the voice and SMS webhooks, the ConversationRelay socket and
its `<Connect action>` callback. Every one checks the signature before anything else."""

from __future__ import annotations

import asyncio
import contextlib
import json

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxline.channels import relay_protocol as wire
from voxline.channels.relay_tools import HANDOFF_REASON_CODE
from voxline.channels.twilio_relay import GreetingMode, RelayCall
from voxline.channels.twilio_sms import split_message
from voxline.channels.twiml import (
    RelayConnect,
    dial_twiml,
    hangup_twiml,
    messages_twiml,
    relay_twiml,
    say_and_hangup_twiml,
)
from voxline.identity.base import SubjectResolver
from voxline.server.config import HostedAgent
from voxline.server.hub import Contact, ConversationHub
from voxline.server.twilio_guard import TwilioGuard

log = structlog.get_logger("voxline.twilio")

RELAY_PATH = "/twilio/relay"
PARAM_AGENT = "voxlineAgent"
PARAM_GREETING = "voxlineGreeting"
NOT_AVAILABLE = "Sorry, this line is not available yet. Please try again later."
CALL_FAILED = "Sorry, something went wrong with this call. Please call again later."
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009


def xml(body: str, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/xml")


class TwilioRoutes:
    def __init__(
        self,
        hub: ConversationHub,
        guard: TwilioGuard,
        resolver: SubjectResolver,
        default_agent: str,
    ) -> None:
        self.hub = hub
        self.guard = guard
        self.resolver = resolver
        self.default_agent = default_agent

    def routes(self) -> list[BaseRoute]:
        methods = ["GET", "POST"]
        return [
            Route("/twilio/voice", self.voice, methods=methods),
            Route("/twilio/voice/{agent}", self.voice, methods=methods),
            Route("/twilio/sms", self.sms, methods=methods),
            Route("/twilio/sms/{agent}", self.sms, methods=methods),
            Route(RELAY_PATH + "/action/{agent}", self.relay_action, methods=["POST"]),
            WebSocketRoute(RELAY_PATH, self.relay_socket),
        ]

    # -- shared ----------------------------------------------------------------------------
    async def _signed_params(self, request: Request) -> dict[str, str] | None:
        """The request's parameters if its signature is valid, else None (answer 403)."""
        if request.method == "POST":
            form = await request.form()
            multi: dict[str, list[str]] = {}
            for name, value in form.multi_items():
                if isinstance(value, str):
                    multi.setdefault(name, []).append(value)
            signed = multi
        else:
            signed = {}
            multi = {}
            for name, value in request.query_params.multi_items():
                multi.setdefault(name, []).append(value)
        if not self.guard.check_request(request, signed):
            return None
        return {name: values[0] for name, values in multi.items()}

    def _agent(self, request: Request) -> HostedAgent | None:
        return self.hub.agents.get(request.path_params.get("agent", self.default_agent))

    # -- voice -----------------------------------------------------------------------------
    async def voice(self, request: Request) -> Response:
        params = await self._signed_params(request)
        if params is None:
            return Response("invalid Twilio signature", status_code=403)
        agent = self._agent(request)
        if agent is None:
            return Response("no such agent", status_code=404)
        if self.hub.draining:
            return Response("shutting down", status_code=503)  # Twilio tries the fallback URL
        if agent.twilio.transport == "media_streams":
            log.error(
                "agent uses Media Streams, which this server does not provide yet",
                agent=agent.name,
            )
            return xml(say_and_hangup_twiml(NOT_AVAILABLE))
        direction = params.get("Direction", "inbound")
        caller = params.get("To" if direction.startswith("outbound") else "From", "")
        subject = await self.resolver.resolve(caller, channel="voice")
        conversation_id = await self.hub.conversation_for(agent, subject, "voice")
        greeting = agent.twilio.greeting_for(agent.spec)
        mode: GreetingMode
        if subject is not None and await self.hub.has_history(conversation_id):
            mode = "contextual"  # a returning caller is greeted with what we remember
        else:
            mode = "welcome" if greeting else "none"
        connect = RelayConnect(
            websocket_url=self.guard.url(request, RELAY_PATH, websocket=True),
            action_url=self.guard.url(request, f"{RELAY_PATH}/action/{agent.name}"),
            welcome_greeting=greeting if mode == "welcome" else None,
            parameters={PARAM_AGENT: agent.name, PARAM_GREETING: mode},
        )
        log.info("call connecting", agent=agent.name, greeting=mode)
        return xml(relay_twiml(agent.spec, agent.twilio, connect))

    async def relay_action(self, request: Request) -> Response:
        params = await self._signed_params(request)
        if params is None:
            return Response("invalid Twilio signature", status_code=403)
        agent = self._agent(request)
        status = params.get("SessionStatus", "")
        handoff = _json_object(params.get("HandoffData", ""))
        log.info("relay session over", status=status, reason=handoff.get("reasonCode"))
        if status == "failed":
            log.error(
                "relay session failed",
                error_code=params.get("ErrorCode"),
                error=params.get("ErrorMessage"),
            )
            return xml(say_and_hangup_twiml(CALL_FAILED))
        target = agent.twilio.transfer_to if agent is not None else None
        if status == "ended" and handoff.get("reasonCode") == HANDOFF_REASON_CODE and target:
            return xml(dial_twiml(target))
        return xml(hangup_twiml())

    async def relay_socket(self, websocket: WebSocket) -> None:
        if not self.guard.check_websocket(websocket) or self.hub.draining:
            await websocket.close(code=POLICY_VIOLATION)  # before accept: the upgrade gets 403
            return
        await websocket.accept()
        async with self.hub.active_call():
            frames = _Frames(websocket, self.hub.settings.twilio_max_frame_bytes)
            setup = await frames.setup()
            if setup is not None:
                await self._run_call(websocket, frames, setup)
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close()

    async def _run_call(self, websocket: WebSocket, frames: _Frames, setup: wire.Setup) -> None:
        agent = self.hub.agents.get(setup.custom_parameters.get(PARAM_AGENT, self.default_agent))
        if agent is None:
            log.warning("relay call for an agent this server does not host")
            return
        subject = await self.resolver.resolve(setup.remote_party, channel="voice")
        conversation_id = await self.hub.conversation_for(agent, subject, "voice")
        ours = setup.from_ if setup.direction.startswith("outbound") else setup.to
        contact = Contact(setup.remote_party, ours) if setup.remote_party else None
        mode = setup.custom_parameters.get(PARAM_GREETING, "none")
        async with self.hub.lease(
            agent, conversation_id, subject=subject, channel="voice", contact=contact
        ) as session:
            call = RelayCall(session, call_sid=setup.call_sid)
            if conversation_id in self.hub.calls:
                log.warning("a second call joined a conversation already on a call")
            self.hub.calls[conversation_id] = call
            writer = asyncio.create_task(_pump(call, websocket))
            try:
                greeting = agent.twilio.greeting_for(agent.spec)
                await call.start(_greeting_mode(mode), greeting)
                async for message in frames:
                    call.handle(message)
            finally:
                if self.hub.calls.get(conversation_id) is call:
                    del self.hub.calls[conversation_id]
                await call.finish()
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        log.info("call finished", agent=agent.name, turns=len(session.turns))

    # -- SMS -------------------------------------------------------------------------------
    async def sms(self, request: Request) -> Response:
        params = await self._signed_params(request)
        if params is None:
            return Response("invalid Twilio signature", status_code=403)
        agent = self._agent(request)
        if agent is None:
            return Response("no such agent", status_code=404)
        if self.hub.draining:
            return Response("shutting down", status_code=503)
        text = params.get("Body", "").strip()
        media = _int(params.get("NumMedia"))
        if media:
            text = f"{text}\n[{media} attachment(s) the assistant cannot see]".strip()
        if not text:
            return xml(messages_twiml([]))
        sender = params.get("From", "")
        subject = await self.resolver.resolve(sender, channel="sms")
        conversation_id = await self.hub.conversation_for(agent, subject, "sms")
        reply = await self.hub.answer_sms(
            agent,
            conversation_id,
            subject=subject,
            contact=Contact(sender, params.get("To", "")),
            text=text,
            reply_within=self.hub.settings.sms_reply_timeout,
        )
        return xml(messages_twiml(split_message(reply) if reply else []))


class _Frames:
    """Inbound frames as protocol messages. Broken frames are logged and skipped; an oversized
    one closes the socket (1009), since a peer sending those is not Twilio behaving."""

    def __init__(self, websocket: WebSocket, max_bytes: int) -> None:
        self._ws = websocket
        self._max = max_bytes
        self.log = log.bind(channel="relay")

    async def setup(self) -> wire.Setup | None:
        async for message in self:
            if isinstance(message, wire.Setup):
                return message
            self.log.warning("message before setup ignored", message=type(message).__name__)
        return None

    def __aiter__(self) -> _Frames:
        return self

    async def __anext__(self) -> wire.RelayMessage:
        while True:
            try:
                event = await self._ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                raise StopAsyncIteration from None
            if event["type"] == "websocket.disconnect":
                raise StopAsyncIteration
            text = event.get("text")
            if text is None:
                self.log.warning("binary frame ignored", size=len(event.get("bytes") or b""))
                continue
            if len(text.encode()) > self._max:
                self.log.warning("frame too large; closing", size=len(text), limit=self._max)
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await self._ws.close(code=MESSAGE_TOO_BIG)
                raise StopAsyncIteration
            try:
                return wire.parse_message(text)
            except wire.RelayProtocolError as exc:
                self.log.warning("malformed frame ignored", error=str(exc))


async def _pump(call: RelayCall, websocket: WebSocket) -> None:
    while True:
        frame = await call.outbox.get()
        try:
            await websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            log.info("socket closed; outbound frames dropped")
            return


def _greeting_mode(value: str) -> GreetingMode:
    if value == "welcome":
        return "welcome"
    return "contextual" if value == "contextual" else "none"


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
