"""The Twilio Media Streams door: the `<Connect><Stream>` TwiML and the `/twilio/media` socket.

Twilio's `start` message says nothing about the call but its SIDs, so the TwiML carries what
the socket needs as `<Parameter>`s (the agent, the caller, our number) and the call token that
proves them (`call_admission.py`: those parameters are not signed, the token is); the `<Stream>`
URL must not have a query string (protocols.md §2.1). The upgrade is signed over that `wss://`
URL and checked before anything else: a bad signature gets 403 and never a session; a `start`
without a valid token for its CallSid closes the stream (1008).

One memory per caller: the call's session comes from the hub by (agent, subject), as for
ConversationRelay and SMS, so what the caller texted is in the model's context.

Call control (`media_tools`): each session gets the tools its agent enables, and they find
their call in `hub.calls` by the session's connection. Ending and transferring go through
Twilio's REST API with the account's credentials; when the agent ends the call, the stream
is closed from our side as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

import structlog
from starlette.requests import Request
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxline.channels import media_protocol as wire
from voxline.channels.media_tools import media_tools, read_until_over
from voxline.channels.realtime_media import RealtimeMediaCall
from voxline.channels.twilio_calls import TwilioCalls
from voxline.channels.twilio_media import MediaCall, MediaStreamTransport
from voxline.channels.twilio_relay import RETURNING_CALLER_NOTE
from voxline.channels.twiml import stream_twiml
from voxline.conversation.session import Session
from voxline.identity.base import SubjectResolver
from voxline.providers.llm.base import ConfigurationError
from voxline.providers.realtime.client import RealtimeConnectError
from voxline.providers.realtime.registry import realtime_part
from voxline.server.call_admission import CallAdmission, CallFacts
from voxline.server.config import HostedAgent
from voxline.server.hub import Contact, ConversationHub, SessionOptions
from voxline.server.live_calls import hosting_call
from voxline.server.socket_frames import twilio_text_frames
from voxline.server.speech_pool import SpeechPool
from voxline.server.twilio_guard import TwilioGuard
from voxline.tools.base import Tool

log = structlog.get_logger("voxline.twilio.media")

MEDIA_PATH = "/twilio/media"
PARAM_AGENT = "voxlineAgent"
PARAM_CALLER = "voxlineCaller"
PARAM_NUMBER = "voxlineNumber"
PARAM_LISTENER = "voxlineListener"
POLICY_VIOLATION = 1008


def media_stream_twiml(
    guard: TwilioGuard,
    request: Request,
    agent: HostedAgent,
    params: dict[str, str],
    listener_id: str | None,
    admission: CallAdmission,
) -> str:
    """The voice webhook's answer for an agent on Media Streams (`params`: the webhook's),
    with the call token that will admit its stream."""
    outbound = params.get("Direction", "inbound").startswith("outbound")
    caller = params.get("To" if outbound else "From", "")
    ours = params.get("From" if outbound else "To", "")
    parameters = {PARAM_AGENT: agent.name, PARAM_CALLER: caller, PARAM_NUMBER: ours}
    if listener_id:
        parameters[PARAM_LISTENER] = listener_id
    facts = CallFacts(agent.name, listener_id, caller, ours)
    parameters.update(admission.parameters(call_sid=params.get("CallSid", ""), facts=facts))
    log.info("media stream connecting", agent=agent.name, listener=listener_id)
    return stream_twiml(guard.url(request, MEDIA_PATH, websocket=True), parameters)


class MediaRoutes:
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
        self.speech = SpeechPool(hub.settings)
        self.rest = TwilioCalls.from_settings(hub.settings)
        self.admission = CallAdmission(hub.settings, lambda: hub.store)
        self._said_no_rest = False

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(MEDIA_PATH, self.socket)]

    def warm_up(self, agents: Iterable[HostedAgent]) -> None:
        """Load the speech models of the hosted agents that take calls over Media Streams."""
        self.speech.warm_up(
            (
                a.spec
                for a in agents
                if a.twilio.transport == "media_streams" and realtime_part(a.spec.llm) is None
            ),
            channel="phone",
        )

    async def close(self) -> None:
        await self.speech.close()
        if self.rest is not None:
            await self.rest.aclose()

    def media_calls(self, connection_id: str) -> MediaCall | None:
        """The live Media Streams call of a connection (for call-control tools)."""
        call = self.hub.calls.get(connection_id)
        return call if isinstance(call, MediaCall) else None

    def _tools_for(self, agent: HostedAgent) -> list[Tool]:
        if self.rest is None and not self._said_no_rest:
            self._said_no_rest = True
            log.warning(
                "no Twilio credentials (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN): Media Streams "
                "calls cannot be transferred, and end_call only closes the stream"
            )
        return media_tools(agent.twilio, self.media_calls, rest=self.rest is not None)

    async def socket(self, websocket: WebSocket) -> None:
        if not self.guard.check_websocket(websocket) or self.hub.draining:
            await websocket.close(code=POLICY_VIOLATION)  # before accept: the upgrade gets 403
            return
        await websocket.accept()
        async with self.hub.active_call():
            events = _Events(websocket, self.hub.settings.twilio_max_frame_bytes)
            start = await events.start()
            facts = await self._facts(start) if start is not None else None
            if start is not None and facts is not None:
                await self._run_call(websocket, events, start, facts)
            elif start is not None:
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await websocket.close(code=POLICY_VIOLATION)
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close()

    async def _facts(self, start: wire.Start) -> CallFacts | None:
        """Who the stream is for, from the call token (the `start` parameters are unsigned)."""
        params = start.custom_parameters
        unsigned = CallFacts(
            params.get(PARAM_AGENT) or None,
            params.get(PARAM_LISTENER) or None,
            params.get(PARAM_CALLER, ""),
            params.get(PARAM_NUMBER, ""),
        )
        return await self.admission.admit(start.call_sid, params, unsigned)

    async def _run_call(
        self, websocket: WebSocket, events: _Events, start: wire.Start, facts: CallFacts
    ) -> None:
        agent = await self.hub.resolve_agent(facts.agent or self.default_agent)
        if agent is None:
            log.warning("media stream for an agent this server does not know")
            return
        # A Realtime agent hears and speaks through its model: µ-law both ways, no speech models.
        realtime = realtime_part(agent.spec.llm)
        speech = None
        try:
            if realtime is None:
                speech = await self.speech.get(agent.spec, channel="phone")
        except Exception as exc:
            log.error("media stream refused: no speech models", agent=agent.name, error=str(exc))
            return
        caller = facts.caller
        subject = await self.resolver.resolve(caller, channel="voice")
        conversation_id = await self.hub.conversation_for(agent, subject, "voice")
        returning = subject is not None and await self.hub.has_history(conversation_id)
        listener_id = facts.listener
        if realtime is None:
            tools = self._tools_for(agent)
        else:

            def realtime_calls(connection_id: str) -> RealtimeMediaCall | None:
                found = self.hub.calls.get(connection_id)
                return found if isinstance(found, RealtimeMediaCall) else None

            tools = media_tools(agent.twilio, realtime_calls, rest=self.rest is not None)
        options = SessionOptions(
            channel="voice",
            connection_id=start.call_sid or start.stream_sid,
            tools=tools,
            listener_id=listener_id,
        )
        async with self.hub.connect(
            agent,
            conversation_id,
            subject=subject,
            options=options,
            contact=Contact(caller, facts.number) if caller else None,
        ) as session:
            if speech is None:
                assert realtime is not None
                await self._run_realtime(
                    websocket, events, start, session, (agent, realtime, facts), returning
                )
                return
            call = MediaCall(
                session, start.stream_sid, speech, call_sid=start.call_sid, rest=self.rest
            )
            async with hosting_call(
                self.hub.calls,
                session.connection_id,
                conversation_id,
                call,
                _send_until_closed(call.transport, websocket),
                self.hub.feeds.get(conversation_id),
                call_sid=start.call_sid,
                caller=caller,
                listener_id=listener_id,
                turns=lambda: len(session.turns),
            ):
                await call.start(agent.twilio.greeting_for(agent.spec), returning=returning)
                await read_until_over(_feed(events, call), call.over)
        log.info("media call finished", agent=agent.name, turns=len(session.turns))

    async def _run_realtime(
        self,
        websocket: WebSocket,
        events: _Events,
        start: wire.Start,
        session: Session,
        realtime: tuple[HostedAgent, str, CallFacts],
        returning: bool,
    ) -> None:
        """`_run_call` for an agent on a Realtime model: the caller's µ-law goes to the model
        and the model's µ-law to the phone, untouched (`channels/realtime_media.py`)."""
        agent, spec, facts = realtime
        try:
            call = RealtimeMediaCall(
                session, start.stream_sid, spec, call_sid=start.call_sid, rest=self.rest
            )
        except ConfigurationError as exc:
            log.error("media stream refused: Realtime model misconfigured", error=str(exc))
            return
        async with hosting_call(
            self.hub.calls,
            session.connection_id,
            session.id,
            call,
            call.port.write(websocket.send_text),
            self.hub.feeds.get(session.id),
            call_sid=start.call_sid,
            caller=facts.caller,
            listener_id=facts.listener,
            turns=lambda: len(session.turns),
        ):
            try:
                await call.start(
                    agent.twilio.greeting_for(agent.spec),
                    returning=returning,
                    note=RETURNING_CALLER_NOTE,
                )
            except RealtimeConnectError as exc:
                log.error("media stream ended: Realtime model unreachable", error=str(exc))
                return
            await read_until_over(call.feed(events), call.over)
        log.info("realtime media call finished", agent=agent.name, turns=len(session.turns))


class _Events:
    """Inbound frames as Media Streams events. Broken frames are logged and skipped; an
    oversized one closes the socket (1009): Twilio's frames are a few hundred bytes."""

    def __init__(self, websocket: WebSocket, max_bytes: int) -> None:
        self._ws = websocket
        self._max = max_bytes

    async def start(self) -> wire.Start | None:
        """The `start` event; None when the stream ends before one."""
        async for event in self:
            if isinstance(event, wire.Start):
                return event
            if isinstance(event, wire.Stop):
                return None
            if not isinstance(event, wire.Connected):
                log.warning("event before start ignored", message_type=type(event).__name__)
        return None

    def __aiter__(self) -> AsyncIterator[wire.MediaEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[wire.MediaEvent]:
        async for text in twilio_text_frames(self._ws, self._max, log):
            try:
                event = wire.parse_event(text)
            except wire.MediaProtocolError as exc:
                log.warning("malformed frame ignored", error=str(exc))
                continue
            yield event


async def _feed(events: _Events, call: MediaCall) -> None:
    """Events into the call until Twilio stops the stream or the socket drops."""
    async for event in events:
        if isinstance(event, wire.Stop):
            return
        call.handle(event)


async def _send_until_closed(transport: MediaStreamTransport, websocket: WebSocket) -> None:
    """The transport's writer; a failed send ends it quietly, since the reader sees the same
    disconnect and ends the call."""
    try:
        await transport.write(websocket.send_text)
    except (WebSocketDisconnect, RuntimeError, OSError):
        log.info("socket closed; outbound media dropped")
