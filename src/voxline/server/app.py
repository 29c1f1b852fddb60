"""`create_app`: the ASGI application behind `voxline serve`.

FastAPI, so the REST API under `/api` gets its OpenAPI schema (`/api/openapi.json`, browsable at
`/api/docs`) from its pydantic models; the Twilio and operator routes are plain Starlette routes
in the same app and stay out of the schema.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.applications import Starlette

from voxline.channels.twilio_sms import TwilioRestSender
from voxline.identity.phone import PhoneSubjectResolver
from voxline.server.admin_routes import AdminRoutes, package_version
from voxline.server.api import PREFIX, api_router
from voxline.server.api import errors as api_errors
from voxline.server.api.calls import serve_injections
from voxline.server.api.context import ApiContext
from voxline.server.api.limits import BodyLimit
from voxline.server.config import ServerConfig
from voxline.server.docs_assets import install_docs
from voxline.server.hub import ConversationHub
from voxline.server.media_routes import MediaRoutes
from voxline.server.metrics_routes import TelemetryMiddleware
from voxline.server.realtime import RealtimeRoutes
from voxline.server.twilio_guard import TwilioGuard
from voxline.server.twilio_routes import TwilioRoutes
from voxline.server.web_routes import WebRoutes
from voxline.settings import Settings
from voxline.store.base import PlatformStore

log = structlog.get_logger("voxline.server")


def create_app(config: ServerConfig) -> FastAPI:
    """Build the app; configuration errors (a missing auth token, two agents with one name)
    raise here, before anything listens. `app.state.hub` is the conversation hub."""
    settings = config.settings
    agents = config.hosted()
    default_agent = config.default_agent or next(iter(agents))
    guard = TwilioGuard(settings)
    sender = config.sms_sender
    if sender is None and settings.twilio_account_sid and settings.twilio_auth_token:
        sender = TwilioRestSender(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            base_url=settings.twilio_api_base_url,
        )
    hub = ConversationHub(
        agents,
        settings,
        store=config.store,
        llm=config.llm,
        sms_sender=sender,
        broker=config.broker,
    )
    resolver = config.subject_resolver or PhoneSubjectResolver(settings.default_country)
    media = MediaRoutes(hub, guard, resolver, default_agent)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        _warn_about_settings(settings, sender is not None)
        await hub.open()
        media.warm_up(agents.values())
        sweeper = _start_platform(app, hub, guard)
        log.info("server ready", agents=sorted(agents), default_agent=default_agent)
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            app.state.api = None
            await hub.close(grace=settings.shutdown_grace_period)
            await media.close()
            log.info("server stopped")

    routes = [
        *AdminRoutes(hub, default_agent).routes(),
        *TwilioRoutes(hub, guard, resolver, default_agent).routes(),
        *media.routes(),
        *WebRoutes(hub, default_agent, media.speech).routes(),
        *RealtimeRoutes(hub, default_agent, media.speech).routes(),
    ]
    app = FastAPI(
        title="voxline",
        version=package_version(),
        summary="Real-time voice AI agents: define, deploy and watch them over HTTP.",
        routes=routes,
        lifespan=lifespan,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: install_docs serves it here
        redoc_url=None,
    )
    install_docs(app, f"{PREFIX}/docs", "voxline")
    # Any API call may meet a database or broker outage: each documents the 503 it then gets.
    app.include_router(api_router(), prefix=PREFIX, responses=api_errors.error_responses(503))
    api_errors.install(app)  # JSON errors app-wide: 503 for outages, 500 for the unexpected
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes, prefix=PREFIX)
    app.add_middleware(TelemetryMiddleware, hub=hub)  # /metrics, session metrics and traces
    app.state.hub = hub
    app.state.api = None
    return app


def _start_platform(
    app: Starlette, hub: ConversationHub, guard: TwilioGuard
) -> asyncio.Task[None] | None:
    """The REST API and the listener sweep, when the store keeps agents and listeners."""
    if not isinstance(hub.store, PlatformStore):
        log.warning("the store keeps no agents or listeners: the REST API is off")
        return None
    api = ApiContext.open(hub, guard)
    app.state.api = api
    serve_injections(hub)
    return asyncio.create_task(api.listeners.sweep_forever(hub.settings.listener_sweep_interval))


def _warn_about_settings(settings: Settings, can_send_sms: bool) -> None:
    if not settings.twilio_validate_signatures:
        log.warning(
            "TWILIO SIGNATURE CHECKS ARE OFF: anyone can drive your agents and run their tools. "
            "Use this only for local development."
        )
    if settings.api_key is None:
        log.warning("approvals API is off: set VOXLINE_API_KEY to approve tool calls over HTTP")
    if not can_send_sms:
        log.warning(
            "no SMS sender: late replies and approval outcomes cannot be texted "
            "(set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)"
        )
