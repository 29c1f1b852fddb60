"""The browser channel's WebRTC door: `POST /web/rtc/offer`, `POST /web/rtc/{call_id}/candidate`
and `DELETE /web/rtc/{call_id}`.

The page sends its SDP offer (microphone as Opus on a send-and-receive audio transceiver, and a
data channel named `voxline`) at once, and its ICE candidates after it as it finds them (trickle
ICE; an offer that already carries them all works too), and gets the server's answer with all of
the server's candidates in it (aiortc gathers before answering, which for host candidates takes
milliseconds). No STUN or TURN server, so candidates are the host addresses of both machines
(a browser on this machine or its network; one behind another NAT would need TURN, which is not
offered, and uses the socket instead). The offer's JSON carries what the socket's query string
does (`agent`, `conversation`); the credential is the socket's (`Authorization: Bearer` with a
session token or API key, or none for a browser on this machine in open-localhost mode), with
the same per-address limits, throttling and origin check (two doors, one set of rules).

Each call runs as a task of the hub's (`hub.tasks`, closed at shutdown) and counts as a call in
progress for a graceful drain. It ends when the agent ends it, when the page hangs up (`DELETE`,
or closing the peer connection), when the peer connection fails, or when the data channel has
not opened within `CONNECT_TIMEOUT`; the peer connection is closed on every one of those paths.
Peer connections at once are capped per server (`MAX_PEERS`) on top of the per-address limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voxline.channels import web_protocol as wire
from voxline.channels.web import Outbox, WebCall
from voxline.channels.webrtc import BotAudioTrack, RtcTransport, pump_events, read_caller
from voxline.server.auth_throttle import client_address
from voxline.server.web_routes import (
    DRAIN_LIMIT,
    POLICY_VIOLATION,
    RTC_PREFIX,
    SERVER_ERROR,
    TRY_AGAIN_LATER,
    Admission,
    CallPlan,
    CallRefused,
)
from voxline.tasks import TaskGroup, TaskGroupClosedError

if TYPE_CHECKING:
    from voxline.server.web_routes import WebRoutes

log = structlog.get_logger("voxline.webrtc")

OFFER_PATH = RTC_PREFIX + "offer"
MAX_OFFER_BYTES = 64 * 1024  # a browser's offer is a few kB; a bigger body is not an offer
MAX_PEERS = 32
"""Peer connections at once, whoever holds them: each has a DTLS session, an Opus encoder and
decoder and a pacing task, and the speech models behind them are shared."""
CONNECT_TIMEOUT = 15.0
"""Seconds from the answer to the data channel opening: ICE and DTLS on a working path take
well under one; a peer that never connects gives its slot back after this."""
CHANNEL_LABEL = "voxline"
MAX_CANDIDATES = 64  # trickled candidates one call may send: a browser has a handful
MAX_CANDIDATE_BYTES = 2048
_STATUS = {POLICY_VIOLATION: 403, TRY_AGAIN_LATER: 429, SERVER_ERROR: 503}
_NO_CACHE = {"Cache-Control": "no-store"}


class BadOffer(ValueError):
    """An offer the server cannot answer; the message says why, for the page's log."""


class NoPath(Exception):
    """The server has no address a browser could reach it on over WebRTC."""


@dataclass
class RtcPeer:
    """One browser's peer connection and what arrived on it."""

    call_id: str
    pc: RTCPeerConnection
    track: BotAudioTrack
    caller: asyncio.Future[MediaStreamTrack] = field(default_factory=asyncio.Future)
    channel: asyncio.Future[RTCDataChannel] = field(default_factory=asyncio.Future)
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # hung up, failed or closed
    candidates: int = 0  # trickled in after the offer

    def watch(self) -> None:
        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and not self.caller.done():
                self.caller.set_result(track)

        @self.pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            if channel.label != CHANNEL_LABEL or self.channel.done():
                return
            channel.on("close", self.gone.set)
            if channel.readyState == "open":
                self.channel.set_result(channel)
            else:
                channel.on("open", lambda: self._opened(channel))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self.gone.set()

    def _opened(self, channel: RTCDataChannel) -> None:
        if not self.channel.done():
            self.channel.set_result(channel)

    async def close(self) -> None:
        self.track.stop()
        with contextlib.suppress(Exception):  # closing a half-negotiated connection
            await self.pc.close()
        for future in (self.caller, self.channel):
            future.cancel()


class WebRtcRoutes:
    """The WebRTC door, admitting calls by the socket door's rules (`WebRoutes`)."""

    def __init__(self, web: WebRoutes, *, max_peers: int | None = None) -> None:
        self.web = web
        self.hub = web.hub
        self.max_peers = MAX_PEERS if max_peers is None else max_peers
        self.peers: dict[str, RtcPeer] = {}
        self._answering = 0  # offers between the peer-count check and `peers`

    def routes(self) -> list[BaseRoute]:
        return [
            Route(OFFER_PATH, self.offer, methods=["POST"]),
            Route(RTC_PREFIX + "{call_id}", self.hang_up, methods=["DELETE"]),
            Route(RTC_PREFIX + "{call_id}/candidate", self.candidate, methods=["POST"]),
        ]

    async def offer(self, request: Request) -> Response:
        if not self.web.origin_allowed(request):
            return _error("this page is from another origin", 403)
        client = client_address(request, self.hub.settings)
        try:
            body = await _read_offer(request)
            admission = await self.web.admit(request, client)
            if len(self.peers) + self._answering >= self.max_peers:
                raise CallRefused("the server has no room for another WebRTC call", TRY_AGAIN_LATER)
            self.web.claim_slot(client)
        except BadOffer as exc:
            return _error(str(exc), 400)
        except CallRefused as refused:
            log.warning("webrtc call refused", reason=str(refused), client=client)
            return _error(str(refused), _STATUS.get(refused.code, 403))
        self._answering += 1
        try:
            self.web.take_new_call(client)
            plan = await self.web.plan_call(body, admission.claims)
            if plan.speech is None:  # a Realtime agent speaks over the socket door only
                self.web.release_slot(client)
                return _error("this agent talks over the WebSocket only", 409, fallback=True)
            peer, answer = await self._answer(body["sdp"])
        except BadOffer as exc:
            self.web.release_slot(client)
            return _error(str(exc), 400)
        except NoPath as exc:
            self.web.release_slot(client)
            log.warning("webrtc call refused", reason=str(exc))
            return _error(str(exc), 503, fallback=True)
        except CallRefused as refused:
            self.web.release_slot(client)
            log.warning("webrtc call refused", reason=str(refused), client=client)
            return _error(str(refused), _STATUS.get(refused.code, 403))
        except BaseException:
            self.web.release_slot(client)
            raise
        finally:
            self._answering -= 1
        self.peers[peer.call_id] = peer
        try:
            self.hub.tasks.spawn(self._call(peer, plan, admission), name=f"webrtc {peer.call_id}")
        except TaskGroupClosedError:  # the server is stopping
            self.peers.pop(peer.call_id, None)
            await peer.close()
            self.web.release_slot(client)
            return _error("the server is shutting down", 503)
        return JSONResponse(
            {"type": answer.type, "sdp": answer.sdp, "call_id": peer.call_id}, headers=_NO_CACHE
        )

    async def hang_up(self, request: Request) -> Response:
        """The page hung up: the call's id is its capability (only that page was told it)."""
        peer = self.peers.get(request.path_params["call_id"])
        if peer is None:
            return _error("no such call", 404)
        peer.gone.set()
        return Response(status_code=204, headers=_NO_CACHE)

    async def candidate(self, request: Request) -> Response:
        """A browser ICE candidate found after its offer was sent (trickle ICE), or, with
        `candidate` null or empty, the end of them. The call's id is its capability."""
        peer = self.peers.get(request.path_params["call_id"])
        if peer is None:
            return _error("no such call", 404)
        try:
            found = _read_candidate(await request.body())
        except BadOffer as exc:
            return _error(str(exc), 400)
        if found is not None:
            peer.candidates += 1
            if peer.candidates > MAX_CANDIDATES:
                return _error(f"over {MAX_CANDIDATES} candidates for one call", 400)
        try:
            await peer.pc.addIceCandidate(found)
        except Exception as exc:  # a candidate for no section of the offer, or after close
            return _error(f"the candidate could not be used: {exc or type(exc).__name__}", 400)
        return Response(status_code=204, headers=_NO_CACHE)

    async def _answer(self, sdp: str) -> tuple[RtcPeer, RTCSessionDescription]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN/TURN: host candidates
        peer = RtcPeer(secrets.token_urlsafe(18), pc, BotAudioTrack())
        peer.watch()
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:  # aiortc raises ValueError and friends for bad SDP
                detail = str(exc) or f"malformed ({type(exc).__name__})"
                raise BadOffer(f"the offer's SDP could not be read: {detail}") from exc
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not audio:
                raise BadOffer("the offer has no audio section: add a sendrecv audio transceiver")
            if pc.sctp is None:
                raise BadOffer(f"the offer has no data channel: create one named {CHANNEL_LABEL!r}")
            audio[0].sender.replaceTrack(peer.track)
            audio[0].direction = "sendrecv"
            await pc.setLocalDescription(await pc.createAnswer())  # gathers host candidates
            if "a=candidate:" not in pc.localDescription.sdp:
                raise NoPath(
                    "this server has no network address to offer WebRTC on (only loopback, "
                    "which aiortc does not use)"
                )
        except BaseException:
            await peer.close()
            raise
        return peer, pc.localDescription

    async def _call(self, peer: RtcPeer, plan: CallPlan, admission: Admission) -> None:
        """One WebRTC call, from the answer to the hang-up; its peer connection is closed and
        its slot given back however it ends."""
        try:
            async with self.hub.active_call():
                await self._serve(peer, plan, admission)
        except Exception:
            log.exception("webrtc call failed", call_id=peer.call_id)
        finally:
            self.peers.pop(peer.call_id, None)
            await peer.close()
            self.web.release_slot(admission.client)

    async def _serve(self, peer: RtcPeer, plan: CallPlan, admission: Admission) -> None:
        assert plan.speech is not None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                channel = await _first(peer.channel, peer.gone)
        except TimeoutError:
            log.warning("webrtc call never connected", call_id=peer.call_id)
            return
        if channel is None:
            return
        agent = plan.agent
        async with self.hub.connect(
            agent,
            plan.conversation_id,
            subject=plan.subject,
            options=self.web.session_options(plan),
        ) as session:

            def audio(outbox: Outbox) -> RtcTransport:
                return RtcTransport(outbox, peer.track)

            call = WebCall(session, plan.speech, output_rate=peer.track.rate, audio=audio)
            peer.track.on_played = call.pipeline.played
            channel.on("message", lambda message: _from_page(call, message))
            self.hub.calls.add(session.connection_id, plan.conversation_id, call)
            tasks = TaskGroup(f"webrtc call {peer.call_id}")
            events = tasks.spawn(pump_events(call.outbox, channel), name="events")
            if peer.caller.done():
                tasks.spawn(read_caller(peer.caller.result(), call.handle_pcm), name="caller")
            feed = self.hub.feeds.get(session.id)
            if feed is not None:
                feed.publish("call_started", channel="web", caller=session.subject)
            log.info("webrtc call started", agent=agent.name, how=admission.how)
            try:
                await call.start(agent=agent.name, greeting=agent.spec.greeting)
                token = self.web.bound_token(admission.claims, session.id)
                if token is not None:
                    call.outbox.put(wire.event("token", token=token, conversation_id=session.id))
                await _first_event(call.over, peer.gone)
                if call.over.is_set() and not peer.gone.is_set():  # the `end` event goes out
                    await asyncio.wait({events}, timeout=DRAIN_LIMIT)
            finally:
                await call.finish()
                await tasks.close()
                self.hub.calls.remove(session.connection_id)
                if feed is not None:
                    feed.publish("call_ended", channel="web", turns=len(session.turns))
            log.info(
                "webrtc call finished",
                turns=len(session.turns),
                frames_sent=peer.track.sent_frames,
                frames_cleared=peer.track.cleared_frames,
                frames_dropped=peer.track.dropped_frames,
            )


def _from_page(call: WebCall, message: str | bytes) -> None:
    """Data channel messages: the socket's JSON text frames (`text`); audio has a track."""
    if isinstance(message, str):
        call.handle_text(message)
    else:
        call.handle_text('{"type": "binary"}')  # refused and counted like any unknown frame


async def _read_offer(request: Request) -> dict[str, str]:
    raw = await request.body()
    if len(raw) > MAX_OFFER_BYTES:
        raise BadOffer(f"the offer is over {MAX_OFFER_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadOffer("the body is not JSON: send {type: 'offer', sdp: ...}") from exc
    if not isinstance(body, dict) or body.get("type") != "offer":
        raise BadOffer("the body needs type 'offer'")
    if not isinstance(body.get("sdp"), str) or not body["sdp"].strip():
        raise BadOffer("the body needs the offer's SDP as a string 'sdp'")
    fields = {"sdp": body["sdp"]}
    for name in ("agent", "conversation"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise BadOffer(f"{name!r} must be a string")
        if value:
            fields[name] = value
    return fields


def _read_candidate(raw: bytes) -> RTCIceCandidate | None:
    """A trickled candidate as the browser's `RTCIceCandidate.toJSON()` sends it."""
    if len(raw) > MAX_CANDIDATE_BYTES:
        raise BadOffer(f"the candidate is over {MAX_CANDIDATE_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise BadOffer("the body is not JSON: send a candidate's toJSON()") from exc
    if not isinstance(body, dict):
        raise BadOffer("the body must be a JSON object")
    line = body.get("candidate")
    if line is None or line == "":
        return None  # the end of the browser's candidates
    mid, index = body.get("sdpMid"), body.get("sdpMLineIndex")
    if not isinstance(line, str) or (mid is not None and not isinstance(mid, str)):
        raise BadOffer("'candidate' and 'sdpMid' must be strings")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
        raise BadOffer("'sdpMLineIndex' must be a whole number")
    if mid is None and index is None:
        raise BadOffer("a candidate needs 'sdpMid' or 'sdpMLineIndex'")
    try:
        found = candidate_from_sdp(line.removeprefix("candidate:"))
    except (AssertionError, ValueError, IndexError) as exc:
        raise BadOffer(f"the candidate could not be read: {line[:80]!r}") from exc
    found.sdpMid, found.sdpMLineIndex = mid, index
    return found


def _error(message: str, status: int, *, fallback: bool = False) -> JSONResponse:
    body: dict[str, object] = {"error": message}
    if fallback:
        body["fallback"] = "ws"
    return JSONResponse(body, status_code=status, headers=_NO_CACHE)


async def _first(
    channel: asyncio.Future[RTCDataChannel], gone: asyncio.Event
) -> RTCDataChannel | None:
    """The data channel once it opens, or None if the peer went first."""
    waiting = asyncio.ensure_future(gone.wait())
    pending: list[asyncio.Future[Any]] = [channel, waiting]
    try:
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    return channel.result() if channel.done() and not channel.cancelled() else None


async def _first_event(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
