"""Twilio's doors into the server: the voice and SMS webhooks, the ConversationRelay socket and
its `<Connect action>` callback, and the ConversationRelay-style sockets of WebSocket listeners.
Every one checks the signature (or, for listener sockets, accepts an API key) before anything
else.

Which agent answers: the one named in the URL; else the agent listening on our number (a
listener created over the API); else the default agent. Agents defined over the API are read
from the store at each call, so an update takes effect from the next call.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxline.channels import relay_protocol as wire
from voxline.channels.media_tools import read_until_over
from voxline.channels.relay_tools import HANDOFF_REASON_CODE, relay_tools
from voxline.channels.twilio_relay import GreetingMode, PromptObserver, RelayCall
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
from voxline.server.api.auth import ApiKeys, bearer_token
from voxline.server.auth_throttle import client_address, throttle_for
from voxline.server.call_admission import CallAdmission, CallFacts
from voxline.server.call_tokens import PARAM_TOKEN
from voxline.server.config import HostedAgent
from voxline.server.feed import FeedPublisher
from voxline.server.hub import Contact, ConversationHub, SessionOptions
from voxline.server.listeners import WS_PREFIX, ListenerDirectory
from voxline.server.live_calls import hosting_call
from voxline.server.media_routes import media_stream_twiml
from voxline.server.socket_frames import twilio_text_frames
from voxline.server.twilio_guard import SIGNATURE_HEADER, TwilioGuard
from voxline.store.base import ListenerRecord, PlatformStore

log = structlog.get_logger("voxline.twilio")

RELAY_PATH = "/twilio/relay"
PARAM_AGENT = "voxlineAgent"
PARAM_GREETING = "voxlineGreeting"
PARAM_LISTENER = "voxlineListener"
CALL_FAILED = "Sorry, something went wrong with this call. Please call again later."
POLICY_VIOLATION = 1008


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
        self.admission = CallAdmission(hub.settings, lambda: hub.store)

    def relay_calls(self, connection_id: str) -> RelayCall | None:
        """The live ConversationRelay call of a connection (for call-control tools)."""
        call = self.hub.calls.get(connection_id)
        return call if isinstance(call, RelayCall) else None

    def routes(self) -> list[BaseRoute]:
        methods = ["GET", "POST"]
        return [
            Route("/twilio/voice", self.voice, methods=methods),
            Route("/twilio/voice/{agent}", self.voice, methods=methods),
            Route("/twilio/sms", self.sms, methods=methods),
            Route("/twilio/sms/{agent}", self.sms, methods=methods),
            Route(RELAY_PATH + "/action/{agent}", self.relay_action, methods=["POST"]),
            WebSocketRoute(RELAY_PATH, self.relay_socket),
            WebSocketRoute(WS_PREFIX + "{path:path}", self.listener_socket),
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

    def _directory(self) -> ListenerDirectory | None:
        store = self.hub.store
        if not isinstance(store, PlatformStore):
            return None
        return ListenerDirectory(store, self.hub.broker)

    async def _route(
        self, request: Request, params: dict[str, str]
    ) -> tuple[HostedAgent | None, str | None]:
        """The agent a webhook is for, and the listener that routed it there (if one did)."""
        named = request.path_params.get("agent")
        if named is not None:
            return await self.hub.resolve_agent(named), None
        outbound = params.get("Direction", "inbound").startswith("outbound")
        ours = params.get("From" if outbound else "To", "")
        directory = self._directory()
        listener = await directory.for_number(ours) if directory and ours else None
        if listener is not None:
            # A listener's agent that no longer runs (deleted, or refused by the allow-list)
            # is refused, not silently replaced by the default agent.
            return await self.hub.agent_by_id(listener.agent_id), listener.id
        return self.hub.agents.get(self.default_agent), None

    # -- voice -----------------------------------------------------------------------------
    async def _admit(
        self, request: Request
    ) -> Response | tuple[dict[str, str], HostedAgent, str | None]:
        """What every webhook checks first: the signature, which agent answers, and whether
        the server still takes calls. Returns the refusal, or (params, agent, listener id)."""
        params = await self._signed_params(request)
        if params is None:
            return Response("invalid Twilio signature", status_code=403)
        agent, listener_id = await self._route(request, params)
        if agent is None:
            return Response("no such agent", status_code=404)
        if self.hub.draining:
            return Response("shutting down", status_code=503)  # Twilio tries the fallback URL
        return params, agent, listener_id

    async def voice(self, request: Request) -> Response:
        admitted = await self._admit(request)
        if isinstance(admitted, Response):
            return admitted
        params, agent, listener_id = admitted
        if agent.twilio.transport == "media_streams":
            twiml = media_stream_twiml(
                self.guard, request, agent, params, listener_id, self.admission
            )
            return xml(twiml)
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
        ours = params.get("From" if direction.startswith("outbound") else "To", "")
        facts = CallFacts(agent.name, listener_id, caller, ours)
        connect = RelayConnect(
            websocket_url=self.guard.url(request, RELAY_PATH, websocket=True),
            action_url=self.guard.url(request, f"{RELAY_PATH}/action/{agent.name}"),
            welcome_greeting=greeting if mode == "welcome" else None,
            parameters={
                PARAM_AGENT: agent.name,
                PARAM_GREETING: mode,
                **({PARAM_LISTENER: listener_id} if listener_id else {}),
                **self.admission.parameters(call_sid=params.get("CallSid", ""), facts=facts),
            },
        )
        log.info("call connecting", agent=agent.name, greeting=mode, listener=listener_id)
        return xml(relay_twiml(agent.spec, agent.twilio, connect))

    async def relay_action(self, request: Request) -> Response:
        params = await self._signed_params(request)
        if params is None:
            return Response("invalid Twilio signature", status_code=403)
        agent = await self.hub.resolve_agent(request.path_params["agent"])
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
        await self._serve_relay(websocket, None)

    async def listener_socket(self, websocket: WebSocket) -> None:
        """A WebSocket listener: ConversationRelay's protocol at a path chosen over the API, for
        Twilio (signed) or any other client holding an API key."""
        directory = self._directory()
        path = WS_PREFIX + websocket.path_params["path"]
        listener = await directory.for_path(path) if directory is not None else None
        client = await self._socket_client(websocket) if listener is not None else None
        if client is None or self.hub.draining:
            await websocket.close(code=POLICY_VIOLATION)
            return
        await self._serve_relay(websocket, listener, trusted=client == "api")

    async def _socket_client(self, websocket: WebSocket) -> str | None:
        """ "api" for a holder of an API key, "twilio" for a signed upgrade, else None."""
        token = bearer_token(websocket.headers.get("authorization", ""))
        if token is not None and isinstance(self.hub.store, PlatformStore):
            settings = self.hub.settings
            keys = ApiKeys(self.hub.store, settings.api_key, throttle_for(self.hub, settings))
            client = client_address(websocket, settings)
            if await keys.authenticate(token, client=client) is not None:
                return "api"
        if not self.guard.enabled or websocket.headers.get(SIGNATURE_HEADER):
            return "twilio" if self.guard.check_websocket(websocket) else None
        log.warning("listener socket refused", reason="neither a Twilio signature nor an API key")
        return None

    async def _serve_relay(
        self, websocket: WebSocket, listener: ListenerRecord | None, *, trusted: bool = False
    ) -> None:
        await websocket.accept()
        async with self.hub.active_call():
            frames = _Frames(websocket, self.hub.settings.twilio_max_frame_bytes)
            setup = await frames.setup()
            facts = await self._facts(setup, listener, trusted) if setup is not None else None
            if setup is not None and facts is not None:
                await self._run_call(websocket, frames, setup, listener, facts)
            elif setup is not None:
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await websocket.close(code=POLICY_VIOLATION)
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close()

    async def _facts(
        self, setup: wire.Setup, listener: ListenerRecord | None, trusted: bool
    ) -> CallFacts | None:
        """Who the call is for. A client holding an API key says so itself; a socket Twilio
        opened for our TwiML proves it with the call token; a Twilio socket on a listener path
        (someone else's TwiML, so no token) gets no caller identity, hence no caller memory."""
        ours = setup.from_ if setup.direction.startswith("outbound") else setup.to
        params = setup.custom_parameters
        unsigned = CallFacts(
            params.get(PARAM_AGENT) or None,
            params.get(PARAM_LISTENER) or None,
            setup.remote_party,
            ours,
        )
        if trusted:
            return unsigned
        if listener is not None and PARAM_TOKEN not in params:
            log.info("listener call without a call token: served without caller memory")
            return CallFacts(None, listener.id, "", ours)
        return await self.admission.admit(setup.call_sid, params, unsigned)

    async def _run_call(
        self,
        websocket: WebSocket,
        frames: _Frames,
        setup: wire.Setup,
        listener: ListenerRecord | None,
        facts: CallFacts,
    ) -> None:
        params = setup.custom_parameters
        listener_id = facts.listener
        if listener is not None:
            agent = await self.hub.agent_by_id(listener.agent_id)
            listener_id = listener.id
        else:
            agent = await self.hub.resolve_agent(facts.agent or self.default_agent)
        if agent is None:
            log.warning("relay call for an agent this server does not know")
            return
        subject = await self.resolver.resolve(facts.caller, channel="voice")
        conversation_id = await self.hub.conversation_for(agent, subject, "voice")
        contact = Contact(facts.caller, facts.number) if facts.caller else None
        greeting = agent.twilio.greeting_for(agent.spec)
        mode = params.get(PARAM_GREETING) or await self._direct_greeting(
            subject, conversation_id, greeting
        )
        options = SessionOptions(
            channel="voice",
            connection_id=setup.call_sid or None,
            tools=relay_tools(agent.spec, agent.twilio, self.relay_calls),
            listener_id=listener_id,
        )
        async with self.hub.connect(
            agent, conversation_id, subject=subject, options=options, contact=contact
        ) as session:
            feed = self.hub.feeds.get(conversation_id)
            call = RelayCall(session, call_sid=setup.call_sid, on_prompt=_partials_to(feed))
            async with hosting_call(
                self.hub.calls,
                session.connection_id,
                conversation_id,
                call,
                _pump(call, websocket),
                feed,
                call_sid=setup.call_sid,
                caller=setup.remote_party,
                listener_id=listener_id,
                turns=lambda: len(session.turns),
            ):
                await call.start(_greeting_mode(mode), greeting)
                # Until Twilio hangs up, or the peer stopped reading our frames (`over`).
                await read_until_over(_handle_all(frames, call), call.over)
        log.info("call finished", agent=agent.name, turns=len(session.turns))

    async def _direct_greeting(
        self, subject: str | None, conversation_id: str, greeting: str | None
    ) -> GreetingMode:
        """A call that came without our TwiML (a listener socket): nobody spoke a greeting."""
        if subject is not None and await self.hub.has_history(conversation_id):
            return "contextual"
        return "spoken" if greeting else "none"

    # -- SMS -------------------------------------------------------------------------------
    async def sms(self, request: Request) -> Response:
        admitted = await self._admit(request)
        if isinstance(admitted, Response):
            return admitted
        params, agent, listener_id = admitted
        text = params.get("Body", "").strip()
        media = _int(params.get("NumMedia"))
        if media:
            text = f"{text}\n[{media} attachment(s) the assistant cannot see]".strip()
        if not text:
            return xml(messages_twiml([]))
        sender = params.get("From", "")
        subject = await self.resolver.resolve(sender, channel="sms")
        conversation_id = await self.hub.conversation_for(agent, subject, "sms")
        reply = await self.hub.sms.answer(
            agent,
            conversation_id,
            subject=subject,
            contact=Contact(sender, params.get("To", "")),
            text=text,
            reply_within=self.hub.settings.sms_reply_timeout,
            listener_id=listener_id,
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

    def __aiter__(self) -> AsyncIterator[wire.RelayMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[wire.RelayMessage]:
        async for text in twilio_text_frames(self._ws, self._max, self.log):
            try:
                message = wire.parse_message(text)
            except wire.RelayProtocolError as exc:
                self.log.warning("malformed frame ignored", error=str(exc))
                continue
            yield message


async def _handle_all(frames: _Frames, call: RelayCall) -> None:
    async for message in frames:
        call.handle(message)


async def _pump(call: RelayCall, websocket: WebSocket) -> None:
    while True:
        frame = await call.outbox.get()
        try:
            await websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            log.info("socket closed; outbound frames dropped")
            return


_GREETING_MODES: dict[str, GreetingMode] = {
    mode: mode for mode in ("welcome", "spoken", "contextual", "none")
}


def _greeting_mode(value: str) -> GreetingMode:
    return _GREETING_MODES.get(value, "none")


def _partials_to(feed: FeedPublisher | None) -> PromptObserver | None:
    """Partial prompts for the feed (final ones arrive as user turns through the session)."""
    if feed is None:
        return None

    def observe(text: str, final: bool) -> None:
        if not final:
            feed.publish("user_utterance", text=text, final=False)

    return observe


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
