"""What every API route needs, built once the hub is open, and the dependencies handing it out:
`Api` (the context) and `authorized` (the caller's key, checked and rate limited).

A client address that keeps sending wrong keys is refused with 429 before its key is looked at
(voxline.server.auth_throttle: the throttle is shared with `/approvals` and `/web/call`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from voxline.server.api.auth import ApiKeys, Principal
from voxline.server.api.errors import ApiError
from voxline.server.api.limits import RateLimiter
from voxline.server.auth_throttle import client_address, throttle_for
from voxline.server.hub import ConversationHub
from voxline.server.listeners import ListenerDirectory
from voxline.server.twilio_guard import TwilioGuard
from voxline.store.base import PlatformStore

log = structlog.get_logger("voxline.api")


@dataclass
class ApiContext:
    hub: ConversationHub
    keys: ApiKeys
    limiter: RateLimiter
    listeners: ListenerDirectory
    urls: TwilioGuard  # public URLs as callers see them (VOXLINE_PUBLIC_URL, forwarded headers)

    @classmethod
    def open(cls, hub: ConversationHub, urls: TwilioGuard) -> ApiContext:
        settings = hub.settings
        return cls(
            hub=hub,
            keys=ApiKeys(hub.platform, settings.api_key, throttle_for(hub, settings)),
            limiter=RateLimiter(settings.api_rate_limit, settings.api_rate_burst),
            listeners=ListenerDirectory(hub.platform, hub.broker),
            urls=urls,
        )

    @property
    def store(self) -> PlatformStore:
        return self.hub.platform

    def url(self, conn: HTTPConnection, path: str, *, websocket: bool = False) -> str:
        return self.urls.url(conn, path, websocket=websocket)


def api_context(conn: HTTPConnection) -> ApiContext:
    api = getattr(conn.app.state, "api", None)
    if not isinstance(api, ApiContext):
        raise ApiError(503, "the API is starting or stopped")
    return api


Api = Annotated[ApiContext, Depends(api_context)]
bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `voxline keys create NAME` or POST /api/keys "
    "(or the bootstrap VOXLINE_API_KEY).",
)


def too_many_failures(retry_after: float) -> ApiError:
    retry = max(1, math.ceil(retry_after))
    return ApiError(
        429,
        f"too many failed authentication attempts from this address; retry in {retry}s",
        {"Retry-After": str(retry)},
    )


async def authorized(
    conn: HTTPConnection,
    api: Api,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    client = client_address(conn, api.hub.settings)
    if (cooling := api.keys.retry_after(client)) > 0:
        log.warning("API request refused", reason="too many failed keys", client=client)
        raise too_many_failures(cooling)
    token = credentials.credentials if credentials else None
    principal = await api.keys.authenticate(token, client=client)
    if principal is None:
        log.warning("API request refused", reason="bad or missing API key")
        raise ApiError(
            401,
            "a valid API key is required: send Authorization: Bearer <key>",
            {"WWW-Authenticate": "Bearer"},
        )
    wait = api.limiter.take(principal.key_id)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise ApiError(429, f"rate limit exceeded; retry in {retry}s", {"Retry-After": str(retry)})
    return principal


Caller = Annotated[Principal, Depends(authorized)]
