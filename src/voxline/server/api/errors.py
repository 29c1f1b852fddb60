"""One error shape for the whole API: `{"error": "...", "fields": [...]}`.

`error` is a sentence a person can act on; `fields` (validation errors only) names each bad field
by its dotted path in the request, so a client can highlight it. Pydantic's union branches
(`tools.0.str`, `tools.0.ToolSpec.name`) are folded away: the field is `tools.0.name`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

_LOCATIONS = {"body", "query", "path", "header", "cookie"}
# Pydantic names union branches and validator wrappers in `loc`; they are not fields.
_BRANCH = re.compile(r"^([A-Z][A-Za-z]*|str|int|float|bool|function-\w+\[.*\])$")


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    fields: list[FieldProblem] | None = None


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


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer."""
    meaning = {
        401: "Missing, unknown or revoked API key",
        404: "No such resource",
        409: "Conflicts with existing state",
        413: "Request body too large",
        422: "Invalid request; `fields` names each bad field",
        429: "Rate limit exceeded; see Retry-After",
    }
    return {code: {"model": ErrorBody, "description": meaning[code]} for code in codes}
