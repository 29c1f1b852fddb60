"""`create_app`: the ASGI application behind `voxline serve`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette

from voxline.channels.twilio_sms import TwilioRestSender
from voxline.identity.phone import PhoneSubjectResolver
from voxline.server.admin_routes import AdminRoutes
from voxline.server.config import HostedAgent, ServerConfig
from voxline.server.hub import ConversationHub
from voxline.server.twilio_guard import TwilioGuard
from voxline.server.twilio_routes import TwilioRoutes
from voxline.settings import Settings

log = structlog.get_logger("voxline.server")


def create_app(config: ServerConfig) -> Starlette:
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
    hub = ConversationHub(agents, settings, store=config.store, llm=config.llm, sms_sender=sender)
    resolver = config.subject_resolver or PhoneSubjectResolver(settings.default_country)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        _warn_about_settings(settings, agents, sender is not None)
        await hub.open()
        log.info("server ready", agents=sorted(agents), default_agent=default_agent)
        try:
            yield
        finally:
            await hub.close(grace=settings.shutdown_grace_period)
            log.info("server stopped")

    routes = [
        *AdminRoutes(hub, default_agent).routes(),
        *TwilioRoutes(hub, guard, resolver, default_agent).routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.hub = hub
    return app


def _warn_about_settings(
    settings: Settings, agents: dict[str, HostedAgent], can_send_sms: bool
) -> None:
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
    for agent in agents.values():
        if agent.twilio.transport == "media_streams":
            log.warning(
                "agent configured for Media Streams, which is not available yet: its calls are "
                "answered with an apology",
                agent=agent.name,
            )
