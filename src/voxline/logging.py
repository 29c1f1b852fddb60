"""Structured logging: JSON lines when not on a terminal, readable colours when on one.

Sessions bind `session_id`, engines bind `turn_id`, and latency fields ride on the events, so a
log aggregator can follow one call without parsing prose.

Every line is redacted (`guardrails/redact.py`): secrets always, personal data when
`VOXLINE_REDACT_PII_IN_LOGS` is on. structlog lines are redacted after their tracebacks are
rendered. Lines of the standard `logging` module (uvicorn's access log with the query strings of
GET webhooks, SQLAlchemy's parameters at DEBUG, httpx, websockets, asyncpg) are redacted when
their record is made, by a record factory, so no handler anyone installs later (uvicorn replaces
its own when the server starts) can print the raw text; a filter on the known loggers and the
root handlers is a second line for records made some other way.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable, Mapping
from numbers import Number
from typing import Any

import structlog

from voxline.guardrails.redact import (
    configure_redaction,
    redact_processor,
    redact_text,
    redact_value,
)
from voxline.settings import Settings, load_settings
from voxline.telemetry.logs import add_trace_ids

# Loggers that print what they are handed (query strings, SQL parameters, URLs, frames).
THIRD_PARTY_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "sqlalchemy.engine",
    "sqlalchemy.engine.Engine",
    "sqlalchemy.pool",
    "asyncpg",
    "aiosqlite",
    "httpx",
    "httpcore",
    "websockets",
    "websockets.client",
    "websockets.server",
    "openai",
    "anthropic",
    "redis",
    "alembic",
)
_DONE = "_voxline_redacted"  # set on a record once it is redacted


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def log_to_stderr_by_default() -> None:
    """Until someone configures structlog, its lines go to stderr: structlog's own default is
    stdout, where a program using voxline as a library (or `voxline chat`) prints its answers,
    and log lines there get mixed into them. An application that configures structlog itself
    keeps whatever it chose."""
    if not structlog.is_configured():
        structlog.configure(logger_factory=_stderr_logger)


log_to_stderr_by_default()


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with every handler on stderr, for `build_server(...,
    log_config=...)`: uvicorn writes its access log to stdout, where it mixes with whatever the
    process prints there (and a supervisor may collect stdout as data)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config.get("handlers", {}).values():
        if "stream" in handler:
            handler["stream"] = "ext://sys.stderr"
    return config


def configure_logging(
    level: str = "INFO",
    json: bool | None = None,
    *,
    redact_pii: bool = True,
    settings: Settings | None = None,
) -> None:
    """Configure structlog and the stdlib root logger once per process, redacting everything.

    The secrets to mask come from `settings`; without it, from the environment and `.env`
    (where `voxline` reads them), so a caller that forgets it still gets the keys masked."""
    if settings is None:
        try:
            settings = load_settings()
        except Exception:  # invalid settings are reported by whoever loads them for real
            settings = None
    configure_redaction(settings, pii=redact_pii)
    use_json = (not sys.stderr.isatty()) if json is None else json
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            # Tracebacks become text here, so the redaction after this sees them.
            structlog.processors.format_exc_info,
            redact_processor,
            add_trace_ids,  # after redaction, so an all-digit id is never masked as a card
            # After the redaction: a timestamp is not a phone number.
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Resolve stderr at each write, not now: a test runner or a daemon may swap it later.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )
    install_stdlib_redaction()


# -- the standard logging module -----------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Redacts a record's message, arguments, traceback and stack in place; never drops one.
    Logger-level filters survive `logging.config.dictConfig` (which uvicorn runs at start)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_FILTER = RedactingFilter()


def install_stdlib_redaction() -> None:
    """Redact every stdlib log record from now on: a record factory for all records, and the
    filter on the root handlers and the third-party loggers. Calling it again does nothing."""
    current = logging.getLogRecordFactory()
    if not getattr(current, _DONE, False):
        logging.setLogRecordFactory(_redacting_factory(current))
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def uninstall_stdlib_redaction() -> None:
    """Undo `install_stdlib_redaction` (tests that must leave the process as they found it)."""
    current = logging.getLogRecordFactory()
    original = getattr(current, "_voxline_wrapped", None)
    if original is not None:
        logging.setLogRecordFactory(original)
    for handler in logging.getLogger().handlers:
        handler.removeFilter(_FILTER)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).removeFilter(_FILTER)


def _redacting_factory(
    wrapped: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = wrapped(*args, **kwargs)
        redact_record(record)
        return record

    setattr(factory, _DONE, True)
    setattr(factory, "_voxline_wrapped", wrapped)  # noqa: B010
    return factory


def redact_record(record: logging.LogRecord) -> None:
    """Redact `record` in place, once. The arguments keep their shape (uvicorn's access
    formatter unpacks a 5-tuple and `%d` needs numbers), so strings are redacted, numbers kept,
    and other objects wrapped so that their `str`/`repr` come out redacted when formatted."""
    if getattr(record, _DONE, False):
        return
    setattr(record, _DONE, True)
    if isinstance(record.msg, str):
        record.msg = redact_text(record.msg)
    elif isinstance(record.msg, Mapping):  # structlog's stdlib bridge hands its event dict
        record.msg = redact_value(record.msg)
    else:
        record.msg = _Shown(record.msg)
    if isinstance(record.args, Mapping):
        record.args = {k: _redacted_arg(v) for k, v in record.args.items()}
    elif record.args:
        record.args = tuple(_redacted_arg(a) for a in record.args)
    if record.exc_info and not record.exc_text:
        # Formatters use `exc_text` when set: the traceback is rendered (and redacted) once.
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


def _redacted_arg(value: object) -> object:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, Number | _Shown):
        return value
    return _Shown(value)


class _Shown:
    """An argument of a log record whose text is redacted when the record is formatted."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return redact_text(str(self.value))

    def __repr__(self) -> str:
        return redact_text(repr(self.value))

    def __format__(self, spec: str) -> str:
        return redact_text(format(self.value, spec))
