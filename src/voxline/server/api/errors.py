"""One error shape for the whole API: `{"error": "...", "fields": [...], "detail": "..."}`.

`error` is a sentence a person can act on; `fields` (validation errors only) names each bad field
by its dotted path in the request, so a client can highlight it. Pydantic's union branches
(`tools.0.str`, `tools.0.ToolSpec.name`) are folded away: the field is `tools.0.name`.

Outages get the same shape. A database, Redis or the event broker being unreachable is not a
bug in the request nor in the server, so it answers 503 with `Retry-After` and a `detail` naming
what failed (never the SQL or its parameters, which may carry callers' words), instead of a
text/plain 500 or a dropped connection. `install` registers this for the whole app, the Twilio
and operator routes included, and turns any other unexpected exception into a JSON 500.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketState

from voxline.server.cluster import ClusterUnavailableError
from voxline.store.brokers import BrokerUnavailableError

log = structlog.get_logger("voxline.api")

RETRY_AFTER = "2"  # seconds a client should wait before trying again after a 503
TRY_AGAIN = 1013  # WebSocket close code "try again later"
INTERNAL_ERROR = 1011

_LOCATIONS = {"body", "query", "path", "header", "cookie"}
# Pydantic names union branches and validator wrappers in `loc`; they are not fields.
_BRANCH = re.compile(r"^([A-Z][A-Za-z]*|str|int|float|bool|function-\w+\[.*\])$")


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    fields: list[FieldProblem] | None = None
    detail: str | None = None


class ApiError(StarletteHTTPException):
    """Raised by routes; becomes `{"error": message}` with the status and headers given."""

    def __init__(
        self, status_code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status_code, message, dict(headers) if headers else None)


def field_problems(errors: Sequence[Mapping[str, Any]]) -> list[FieldProblem]:
    """Readable problems from pydantic errors, one per field, union noise removed."""
    found: list[tuple[str, bool, str]] = []  # field, from a union's plain-string branch, message
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in _LOCATIONS:
            loc = loc[1:]
        name = ".".join(part for part in loc if not _BRANCH.match(part)) or "(body)"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        found.append((name, bool(loc) and loc[-1] == "str", message))
    detailed = {name for name, string_branch, _ in found if not string_branch}
    problems: dict[str, FieldProblem] = {}
    for name, string_branch, message in found:
        if string_branch and any(d == name or d.startswith(name + ".") for d in detailed):
            continue  # "should be a string" is noise when the object branch said more
        problems.setdefault(name, FieldProblem(field=name, message=message))
    return list(problems.values())


def _postgres_errors() -> tuple[type[Exception], ...]:
    """asyncpg's connection-level errors, when asyncpg is installed (PostgreSQL is optional)."""
    try:
        pg = importlib.import_module("asyncpg.exceptions")
    except ImportError:
        return ()
    return (
        pg.PostgresConnectionError,
        pg.InterfaceError,
        pg.TooManyConnectionsError,
        pg.CannotConnectNowError,
    )


_POSTGRES = _postgres_errors()
_SQL_OUTAGES = (sa.OperationalError, sa.InterfaceError, sa.TimeoutError, sa.DisconnectionError)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def failure_reason(exc: BaseException) -> str:
    """What failed, in one bounded line fit for a client or /health."""
    if isinstance(exc, sa.DBAPIError) and exc.orig is not None:
        exc = exc.orig  # the driver's words, without the statement and its parameters
    return _one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def outage(exc: BaseException) -> tuple[str, str] | None:
    """`(error, detail)` when `exc` means a service the server depends on is unavailable (the
    request may succeed if repeated shortly), else None."""
    if isinstance(exc, ClusterUnavailableError | BrokerUnavailableError):
        return "other workers cannot be reached right now; try again shortly", _one_line(str(exc))
    if isinstance(exc, _SQL_OUTAGES) or (
        isinstance(exc, sa.DBAPIError) and exc.connection_invalidated
    ):
        return "the database is unavailable; try again shortly", failure_reason(exc)
    if _POSTGRES and isinstance(exc, _POSTGRES):
        return "the database is unavailable; try again shortly", failure_reason(exc)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return "Redis is unavailable; try again shortly", failure_reason(exc)
    if isinstance(exc, TimeoutError):
        return "a service this server depends on did not answer in time; try again", failure_reason(
            exc
        )
    if isinstance(exc, OSError):
        return "a service this server depends on is unreachable; try again shortly", failure_reason(
            exc
        )
    return None


async def _close_socket(websocket: WebSocket, code: int, reason: str) -> None:
    """A WebSocket cannot get a JSON body: close it with a code and the reason instead."""
    if websocket.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(code, reason[:120])  # a close reason is capped at 123 bytes


async def _unavailable(conn: HTTPConnection, exc: Exception) -> JSONResponse | None:
    described = outage(exc)
    if described is None:  # a DBAPIError that is not an outage (a constraint, bad SQL): a bug
        return await _internal(conn, exc)
    error, detail = described
    log.warning("request failed: a dependency is unavailable", path=conn.url.path, detail=detail)
    if isinstance(conn, WebSocket):
        await _close_socket(conn, TRY_AGAIN, error)
        return None
    body = ErrorBody(error=error, detail=detail).model_dump(exclude_none=True)
    return JSONResponse(body, 503, headers={"Retry-After": RETRY_AFTER})


async def _internal(conn: HTTPConnection, exc: Exception) -> JSONResponse | None:
    """Anything else unexpected: JSON, never text/plain, and the message stays in the log (it
    may say more than a client should see)."""
    if isinstance(conn, WebSocket):
        log.error("websocket handler failed", path=conn.url.path, exc_info=exc)
        await _close_socket(conn, INTERNAL_ERROR, "internal error")
        return None
    body = ErrorBody(error="internal server error", detail=type(exc).__name__)
    return JSONResponse(body.model_dump(exclude_none=True), 500)


def install(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        body = ErrorBody(error=str(exc.detail))
        return JSONResponse(
            body.model_dump(exclude_none=True), exc.status_code, headers=exc.headers
        )

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = field_problems(exc.errors())
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        body = ErrorBody(error=f"invalid request: {summary}", fields=problems)
        return JSONResponse(body.model_dump(exclude_none=True), 422)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    outages: tuple[type[Exception], ...] = (
        BrokerUnavailableError,
        ClusterUnavailableError,
        sa.DBAPIError,
        sa.TimeoutError,
        sa.DisconnectionError,
        *_POSTGRES,
        RedisConnectionError,
        RedisTimeoutError,
        TimeoutError,
        OSError,
    )
    unavailable: Any = _unavailable  # Starlette types HTTP and WebSocket handlers apart
    internal: Any = _internal
    for kind in outages:
        app.add_exception_handler(kind, unavailable)
    # Exception handlers go to Starlette's outermost middleware, which still re-raises after
    # answering, so the traceback is logged by the server as before.
    app.add_exception_handler(Exception, internal)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer."""
    meaning = {
        401: "Missing, unknown or revoked API key",
        404: "No such resource",
        409: "Conflicts with existing state",
        413: "Request body too large",
        422: "Invalid request; `fields` names each bad field",
        429: "Rate limit exceeded; see Retry-After",
        503: "A service the server depends on (database, Redis, other workers) is unavailable; "
        "`detail` says which. Try again after Retry-After",
    }
    return {code: {"model": ErrorBody, "description": meaning[code]} for code in codes}
