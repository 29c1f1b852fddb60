"""The REST API under `/api`: agents, models, listeners, calls, text sessions, keys, and the
live debug feed sockets. Schemas are pydantic models, so `/api/openapi.json` is generated."""

from __future__ import annotations

from fastapi import APIRouter

from voxline.server.api import agents, audit, calls, catalog, feed, keys, listeners, sessions, web

PREFIX = "/api"


def api_router() -> APIRouter:
    router = APIRouter()
    for part in (agents, catalog, listeners, calls, sessions, keys, feed, web, audit):
        router.include_router(part.router)
    return router
