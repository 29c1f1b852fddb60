"""A structlog processor that puts `trace_id` and `span_id` on log lines.

So a log search can jump to the trace of the call a line came from, and a trace to its logs.
The ids come from OpenTelemetry's current span when code runs inside one (an embedding app's
own spans), otherwise from the spans voxline opened for the session the line is bound to
(`telemetry/trace_ids.py`). Lines that belong to no traced session are left alone, and with
tracing off this costs one dict truthiness check per line. It imports nothing optional: it can
sit in the processor chain whether or not the `ops` extra is installed.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from voxline.telemetry import trace_ids

try:
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - without opentelemetry-api
    _otel_trace = None  # type: ignore[assignment]


def add_trace_ids(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add `trace_id`/`span_id` (hex) when the line belongs to a trace."""
    if "trace_id" in event_dict:
        return event_dict
    ids = _current() if _otel_trace is not None else None
    if ids is None and trace_ids.active():
        ids = trace_ids.lookup(
            connection=event_dict.get("connection"),
            conversation=event_dict.get("session_id") or event_dict.get("conversation_id"),
            call_id=event_dict.get("call_id"),
        )
    if ids is not None:
        event_dict["trace_id"], event_dict["span_id"] = ids
    return event_dict


def _current() -> trace_ids.Ids | None:
    context = _otel_trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace_ids.hex_ids(context.trace_id, context.span_id)
