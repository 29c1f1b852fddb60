"""The live debug feed sockets: `/api/listeners/{id}/feed` (every call the listener routes) and
`/api/calls/{id}/feed` (one conversation).

The server sends `feed_ready` once subscribed, then every event as JSON. A `client_tool_call`
event asks the client to run a client tool; it answers on the same socket with
`{"type": "tool_result", "request_id": ..., "result": ...}` (or `"error": "..."`), and the answer
travels back to whichever worker holds the call. Browsers cannot set headers on a WebSocket, so
a client without `Authorization: Bearer` sends `{"type": "auth", "token": ...}` first; the key
never appears in a URL (URLs end up in logs).

While a client is connected to a listener's feed, the listener's reclaim deadline keeps moving;
once the last client is gone for the idle timeout, the sweep deletes the listener and its feed
clients get `listener_deleted` and are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import structlog
from fastapi import APIRouter
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxline.server.api.auth import Principal, bearer_token
from voxline.server.api.context import ApiContext
from voxline.server.auth_throttle import client_address
from voxline.server.cluster import ClusterUnavailableError, LiveSubscription, close_subscription
from voxline.server.feed import CLIENT_TOOL_CALL, call_channel, listener_channel
from voxline.server.listeners import LISTENER_DELETED

log = structlog.get_logger("voxline.api.feed")

router = APIRouter()

AUTH_TIMEOUT = 10.0  # seconds a client without a header has to send its key
HEARTBEAT_MAX = 30.0  # seconds between refreshes of a listener's reclaim deadline
UNAUTHORIZED = 4401
NOT_FOUND = 4404
TRY_AGAIN_LATER = 1013


@router.websocket("/listeners/{listener_id}/feed")
async def listener_feed(websocket: WebSocket, listener_id: str) -> None:
    api = await _open(websocket)
    if api is None:
        return
    listener = await api.store.get_listener(listener_id)
    if listener is None:
        await _refuse(websocket, NOT_FOUND, f"no listener with id {listener_id!r}")
        return
    feed = _Feed(websocket, api, listener_channel(listener.id))
    heartbeat = None
    if listener.idle_timeout > 0:
        interval = min(listener.idle_timeout / 3, HEARTBEAT_MAX)
        heartbeat = _keep_alive(api, feed, listener.id, interval)
    try:
        await feed.run({"listener_id": listener.id, "agent_id": listener.agent_id}, heartbeat)
    finally:
        if listener.idle_timeout > 0:
            with contextlib.suppress(Exception):
                await api.listeners.touch(listener.id)  # the idle clock starts now


@router.websocket("/calls/{call_id}/feed")
async def call_feed(websocket: WebSocket, call_id: str) -> None:
    api = await _open(websocket)
    if api is None:
        return
    if await api.store.get_conversation(call_id) is None:
        await _refuse(websocket, NOT_FOUND, f"no call with id {call_id!r}")
        return
    await _Feed(websocket, api, call_channel(call_id)).run({"call_id": call_id}, None)


async def _open(websocket: WebSocket) -> ApiContext | None:
    """Accept an authenticated client; None when refused (the socket is closed then)."""
    api = getattr(websocket.app.state, "api", None)
    if not isinstance(api, ApiContext):
        await websocket.close(code=TRY_AGAIN_LATER)
        return None
    header = websocket.headers.get("authorization")
    if header is not None:
        if await _principal(api, bearer_token(header), websocket) is None:
            await websocket.close(code=UNAUTHORIZED)  # before accept: the upgrade gets 403
            return None
        await websocket.accept()
        return api
    await websocket.accept()
    try:
        async with asyncio.timeout(AUTH_TIMEOUT):
            first = _parse(await websocket.receive_text())
    except (TimeoutError, WebSocketDisconnect):
        first = None
    token = first.get("token") if first and first.get("type") == "auth" else None
    if await _principal(api, token if isinstance(token, str) else None, websocket) is None:
        await _refuse(websocket, UNAUTHORIZED, 'send {"type": "auth", "token": API_KEY} first')
        return None
    return api


async def _principal(api: ApiContext, token: str | None, websocket: WebSocket) -> Principal | None:
    """A wrong key counts against the client's address (see `auth_throttle`)."""
    client = client_address(websocket, api.hub.settings)
    principal = await api.keys.authenticate(token, client=client)
    if principal is None:
        log.warning("feed socket refused", reason="bad or missing API key")
    elif api.limiter.take(principal.key_id) > 0:
        log.warning("feed socket refused", reason="rate limited")
        return None
    return principal


async def _refuse(websocket: WebSocket, code: int, message: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.send_text(json.dumps({"type": "error", "message": message}))
        await websocket.close(code=code)


def _parse(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


async def _keep_alive(api: ApiContext, feed: _Feed, listener_id: str, interval: float) -> None:
    while True:
        if not await api.listeners.touch(listener_id):
            await feed.send({"type": LISTENER_DELETED, "listener_id": listener_id})
            return
        await asyncio.sleep(interval)


class _Feed:
    def __init__(self, websocket: WebSocket, api: ApiContext, channel: str) -> None:
        self.websocket = websocket
        self.api = api
        self.channel = channel
        self._send_lock = asyncio.Lock()
        self._tool_requests: dict[str, str] = {}  # request id -> the requesting worker's inbox

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(message, default=str))

    async def run(self, hello: dict[str, Any], extra: Coroutine[Any, Any, None] | None) -> None:
        # In effect now, and never silently over while the socket is open (a broker hiccup).
        subscription = LiveSubscription(self.api.hub.broker, self.channel)
        tasks = [
            asyncio.ensure_future(self._forward(subscription)),
            asyncio.ensure_future(self._receive()),
        ]
        if extra is not None:
            tasks.append(asyncio.ensure_future(extra))
        try:
            await self.send({"type": "feed_ready", **hello})
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_subscription(subscription)
            if self.websocket.application_state != WebSocketState.DISCONNECTED:
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await self.websocket.close()

    async def _forward(self, subscription: AsyncIterator[dict[str, Any]]) -> None:
        async for event in subscription:
            if event.get("type") == CLIENT_TOOL_CALL:
                event = dict(event)
                reply_to = event.pop("reply_to", None)
                request_id = event.get("request_id")
                if isinstance(reply_to, str) and isinstance(request_id, str):
                    self._tool_requests[request_id] = reply_to
            await self.send(event)
            if event.get("type") == LISTENER_DELETED:
                return

    async def _receive(self) -> None:
        while True:
            message = _parse(await self.websocket.receive_text())
            kind = message.get("type") if message else None
            if message is not None and kind == "tool_result":
                await self._tool_result(message)
            elif kind == "ping":
                await self.send({"type": "pong"})
            else:
                await self.send(
                    {"type": "error", "message": "expected a JSON object of type tool_result"}
                )

    async def _tool_result(self, message: dict[str, Any]) -> None:
        request_id = message.get("request_id")
        reply_to = (
            self._tool_requests.pop(request_id, None) if isinstance(request_id, str) else None
        )
        if reply_to is None or not isinstance(request_id, str):
            await self.send({"type": "error", "message": f"no pending tool call {request_id!r}"})
            return
        error = message.get("error")
        answer = {"result": message.get("result"), "error": None if error is None else str(error)}
        try:
            await self.api.hub.link.reply(reply_to, request_id, answer)
        except ClusterUnavailableError as exc:  # the client may send it again once it heals
            self._tool_requests[request_id] = reply_to
            await self.send(
                {"type": "error", "request_id": request_id, "message": f"not delivered: {exc}"}
            )
