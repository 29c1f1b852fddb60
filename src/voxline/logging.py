"""Structured logging: JSON lines when not on a terminal, readable colours when on one.

Sessions bind `session_id`, engines bind `turn_id`, and latency fields ride on the events, so a
log aggregator can follow one call without parsing prose.
"""

from __future__ import annotations

import logging
import sys

import structlog

from voxline.guardrails.pii import redact_processor


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure_logging(
    level: str = "INFO", json: bool | None = None, *, redact_pii: bool = True
) -> None:
    """Configure structlog and the stdlib root logger once per process."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    redaction: list[structlog.typing.Processor] = [redact_processor] if redact_pii else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *redaction,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
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
