"""The Realtime-compatible door: `/v1/realtime?model=AGENT`, as OpenAI's SDKs connect to it.

`AsyncOpenAI(base_url="http://HOST:PORT/v1", api_key=KEY).realtime.connect(model=AGENT)` lands
here (the SDKs append `/realtime` to the base URL), and so does `client.beta.realtime.connect`
(which adds `OpenAI-Beta: realtime=v1`) and a browser, which cannot set headers and offers
WebSocket subprotocols instead (`realtime`, `openai-insecure-api-key.KEY`,
`openai-beta.realtime-v1`), as it does with OpenAI.

Everything is checked on the upgrade itself, since the SDK surfaces only the HTTP status: a bad
or missing key gets 401 (the server's `VOXLINE_API_KEY` or a stored API key, rate limited like
the REST API), an unknown agent 404, a draining server 503. An ASGI server without the denial
extension gets 403 instead. The model name is an agent's name; without one, the default agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac

import structlog
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxline.server.api.auth import ApiKeys, bearer_token
from voxline.server.api.context import ApiContext
from voxline.server.hub import ConversationHub
from voxline.server.realtime.bridge import RealtimeBridge, SpeechSource
from voxline.server.realtime.outbox import Outbox
from voxline.server.realtime.protocol import ClientError, Dialect
from voxline.server.socket_frames import received
from voxline.store.base import PlatformStore

log = structlog.get_logger("voxline.realtime")

REALTIME_PATH = "/v1/realtime"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
POLICY_VIOLATION = 1008
DRAIN_SECONDS = 2.0  # what is queued for a client that leaves may take this long to go out


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RealtimeRoutes:
    def __init__(self, hub: ConversationHub, default_agent: str, speech: SpeechSource) -> None:
        self.hub = hub
        self.default_agent = default_agent
        self.speech = speech

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(REALTIME_PATH, self.socket)]

    async def socket(self, websocket: WebSocket) -> None:
        offered = _subprotocols(websocket)
        try:
            await self._admit(websocket, offered)
            name = websocket.query_params.get("model") or self.default_agent
            agent = await self.hub.resolve_agent(name)
            if agent is None:
                raise _Refused(404, f"no agent named {name[:80]!r} on this server")
        except _Refused as refused:
            log.warning("realtime socket refused", status=refused.status, reason=refused.message)
            await _deny(websocket, refused)
            return
        beta = "realtime=v1" in websocket.headers.get("openai-beta", "") or (
            BETA_SUBPROTOCOL in offered
        )
        await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
        outbox = Outbox()  # a client given up on gets its socket closed by the writer
        bridge = RealtimeBridge(
            self.hub, agent, self.speech, Dialect.BETA if beta else Dialect.GA, outbox
        )
        async with self.hub.active_call():
            writer = asyncio.create_task(_pump(outbox, websocket))
            bridge.start()
            bridge.log.info("realtime socket opened", dialect=bridge.wire.dialect.value)
            try:
                await _read(websocket, bridge)
            finally:
                await bridge.close()
                outbox.close()
                done, _ = await asyncio.wait({writer}, timeout=DRAIN_SECONDS)
                if not done:
                    writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await websocket.close()
            bridge.log.info("realtime socket closed")

    async def _admit(self, websocket: WebSocket, offered: list[str]) -> None:
        if self.hub.draining:
            raise _Refused(503, "the server is shutting down")
        token = bearer_token(websocket.headers.get("authorization", ""))
        if token is None:
            keys = [p[len(KEY_SUBPROTOCOL) :] for p in offered if p.startswith(KEY_SUBPROTOCOL)]
            token = keys[0] if keys else None
        if token is None:
            raise _Refused(401, "an API key is required: send Authorization: Bearer <key>")
        try:
            key_id = await self._authenticate(websocket, token)
        except _Refused:
            raise
        except Exception as exc:  # the store is down: say so rather than "bad key"
            log.warning("realtime socket: keys could not be checked", error=str(exc))
            raise _Refused(503, "API keys cannot be checked right now; try again") from exc
        if key_id is None:
            raise _Refused(401, "the API key is not valid")

    async def _authenticate(self, websocket: WebSocket, token: str) -> str | None:
        """The key's id when `token` is the server's key or a stored one (rate limited like
        the REST API when it runs), else None."""
        api = getattr(websocket.app.state, "api", None)
        if isinstance(api, ApiContext):
            principal = await api.keys.authenticate(token)
            if principal is not None and api.limiter.take(principal.key_id) > 0:
                raise _Refused(429, "rate limit exceeded; try again shortly")
            return principal.key_id if principal is not None else None
        store = self.hub.store
        if isinstance(store, PlatformStore):
            principal = await ApiKeys(store, self.hub.settings.api_key).authenticate(token)
            return principal.key_id if principal is not None else None
        bootstrap = self.hub.settings.api_key
        if bootstrap is not None and hmac.compare_digest(
            token.encode(), bootstrap.get_secret_value().encode()
        ):
            return "bootstrap"
        return None


def _subprotocols(websocket: WebSocket) -> list[str]:
    header = websocket.headers.get("sec-websocket-protocol", "")
    return [part.strip() for part in header.split(",") if part.strip()]


async def _deny(websocket: WebSocket, refused: _Refused) -> None:
    error = {
        "type": "invalid_request_error",
        "code": str(refused.status),
        "message": refused.message,
    }
    headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None
    response = JSONResponse({"error": error}, status_code=refused.status, headers=headers)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # no denial extension on this server: the upgrade gets 403
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(code=POLICY_VIOLATION)


async def _read(websocket: WebSocket, bridge: RealtimeBridge) -> None:
    """Client frames into the bridge, in order, until the socket closes."""
    async for message in received(websocket):
        text = message.get("text")
        if text is not None:
            await bridge.handle(text)
        else:
            bridge.refuse(
                ClientError("invalid_json", "binary frames are not part of the protocol; send JSON")
            )


async def _pump(outbox: Outbox, websocket: WebSocket) -> None:
    while (entry := await outbox.get()) is not None:
        try:
            await websocket.send_text(entry[0])
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
    if outbox.abandoned is not None:  # the client stopped reading: it gets no more time
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(code=POLICY_VIOLATION, reason="client too slow")
