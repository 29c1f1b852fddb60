"""`/metrics` and the session observers behind it, as one ASGI middleware.

Why a middleware rather than a route: the observers (`telemetry/session_metrics.py`,
`telemetry/spans.py`) must be attached to the hub's `LiveSessions`, which exists only once the
app's lifespan has opened the hub. A middleware sees the lifespan messages, so it attaches them
the moment startup completes (before any call can arrive) and flushes spans when shutdown is
done, without the app's lifespan knowing about telemetry; `create_app` registers it in one line.
Every other request passes straight through (one string comparison).

Who may scrape (docs/operations.md): a client on this machine talking to it directly, unless
`VOXLINE_METRICS_LOOPBACK_OPEN=false`; anyone with `Authorization: Bearer` and the scrape token
(`VOXLINE_METRICS_TOKEN`) or the bootstrap API key (`VOXLINE_API_KEY`). Nobody else: with no
token configured, remote scrapes get 403 saying what to set. Wrong tokens count against the
client's address in the throttle every door shares. `VOXLINE_METRICS_ENABLED=false` hides it.
"""

from __future__ import annotations

import asyncio
import hmac
import math

import structlog
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxline.server.api.auth import bearer_token
from voxline.server.auth_throttle import client_address, is_local_client, throttle_for
from voxline.server.hub import ConversationHub
from voxline.telemetry import metrics, multiproc, tracing
from voxline.telemetry.scrape import ScrapeGauges
from voxline.telemetry.session_metrics import SessionMetrics
from voxline.telemetry.settings import TelemetrySettings

log = structlog.get_logger("voxline.server.metrics")

PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class TelemetryMiddleware:
    def __init__(
        self, app: ASGIApp, hub: ConversationHub, settings: TelemetrySettings | None = None
    ) -> None:
        self.app = app
        self.hub = hub
        self.settings = settings or TelemetrySettings()
        self.serving = self.settings.metrics_enabled and metrics.AVAILABLE
        self.session_metrics: SessionMetrics | None = None
        self.scrape = ScrapeGauges(lambda: hub.store, lambda: hub.broker)
        self._counted = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and self.settings.metrics_enabled:
            await self._serve(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan(send))
        else:
            await self.app(scope, receive, send)

    # -- lifecycle -------------------------------------------------------------------------
    def _lifespan(self, send: Send) -> Send:
        async def relay(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self._attach()
            elif message["type"] == "lifespan.shutdown.complete":
                await self._detach()
            await send(message)

        return relay

    def _attach(self) -> None:
        """The hub is open: watch its sessions (metrics when served, spans when configured)."""
        observers = self.hub.live.observers
        if self.serving:
            self.session_metrics = SessionMetrics(self.hub.feeds, self.hub.broker)
            observers.append(self.session_metrics)
            metrics.get().workers.inc()
            self._counted = True
        tracer = tracing.tracer()
        if tracer is not None:
            from voxline.telemetry.spans import SessionTracer

            content = self.settings.trace_content
            observers.append(SessionTracer(tracer, content=content, feeds=self.hub.feeds))
            log.info("tracing sessions", content=content)

    async def _detach(self) -> None:
        if self._counted:
            self._counted = False
            metrics.get().workers.dec()
        try:
            await tracing.flush()
        except Exception as exc:  # an unreachable collector must not fail the shutdown
            log.warning("spans not exported at shutdown", error=type(exc).__name__)

    # -- /metrics --------------------------------------------------------------------------
    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = self._refusal(request) or await self._metrics(request)
        await response(scope, receive, send)

    async def _metrics(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("method not allowed", 405, headers={"Allow": "GET, HEAD"})
        if not self.serving:
            return PlainTextResponse(
                "metrics need prometheus-client: pip install 'voxline[ops]'", status_code=501
            )
        if self.session_metrics is not None:
            self.session_metrics.sync_drops()
        body = await asyncio.to_thread(multiproc.render)  # file reads: off the event loop
        body += await self.scrape.render()
        return Response(body, media_type=CONTENT_TYPE)

    def _refusal(self, request: Request) -> Response | None:
        """None when the client may scrape; otherwise the answer to send (401/403/429)."""
        given = bearer_token(request.headers.get("authorization", ""))
        if given is None and self.settings.metrics_loopback_open and is_local_client(request):
            return None
        accepted = [
            secret.get_secret_value().encode()
            for secret in (self.settings.metrics_token, self.hub.settings.api_key)
            if secret is not None and secret.get_secret_value()
        ]
        client = client_address(request, self.hub.settings)
        throttle = throttle_for(self.hub, self.hub.settings)
        if (cooling := throttle.retry_after(client)) > 0:
            retry = str(max(1, math.ceil(cooling)))
            return PlainTextResponse(
                "too many failed tokens from this address", 429, headers={"Retry-After": retry}
            )
        if given is not None:
            if any(hmac.compare_digest(given.encode(), token) for token in accepted):
                return None
            throttle.failed(client)
            log.warning("metrics scrape refused", reason="wrong token")
        elif not accepted:
            return PlainTextResponse(
                "metrics are served to this machine only: set VOXLINE_METRICS_TOKEN and scrape "
                "with Authorization: Bearer <token>",
                status_code=403,
            )
        return PlainTextResponse(
            "a scrape token is required (Authorization: Bearer)",
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
