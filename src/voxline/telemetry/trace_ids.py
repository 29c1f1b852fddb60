"""Which trace and span a log line belongs to, found by the ids the line already carries.

Spans are made by observing session events (`telemetry/spans.py`), not by wrapping the code
that logs, so OpenTelemetry's "current span" is empty while a session logs. Instead, the span
observer records the span that is open for each connection (the call, or the turn in
progress), for each conversation (its latest connection) and for each running tool call, and
the log processor (`telemetry/logs.py`) looks up the ids a log line is bound with: `connection`
(session logs), `session_id` (engine and voice logs: the conversation id), `call_id` (tool
logs). Three small dicts in this process; empty, and never consulted twice, with tracing off.
"""

from __future__ import annotations

Ids = tuple[str, str]  # (trace id, span id) as lowercase hex, as log and trace tools write them

_connections: dict[str, Ids] = {}
_conversations: dict[str, str] = {}  # conversation id -> its most recent connection here
_tool_calls: dict[str, Ids] = {}


def hex_ids(trace_id: int, span_id: int) -> Ids:
    return f"{trace_id:032x}", f"{span_id:016x}"


def bind_connection(connection: str, conversation: str, ids: Ids) -> None:
    _connections[connection] = ids
    _conversations[conversation] = connection


def unbind_connection(connection: str, conversation: str) -> None:
    _connections.pop(connection, None)
    if _conversations.get(conversation) == connection:
        del _conversations[conversation]


def bind_tool_call(call_id: str, ids: Ids) -> None:
    _tool_calls[call_id] = ids


def unbind_tool_call(call_id: str) -> None:
    _tool_calls.pop(call_id, None)


def active() -> bool:
    return bool(_connections)


def lookup(
    *, connection: object = None, conversation: object = None, call_id: object = None
) -> Ids | None:
    """The most specific ids known for a log line's bound ids (tool call, then connection,
    then conversation), or None."""
    if isinstance(call_id, str) and (ids := _tool_calls.get(call_id)) is not None:
        return ids
    if isinstance(connection, str) and (ids := _connections.get(connection)) is not None:
        return ids
    if isinstance(conversation, str) and (latest := _conversations.get(conversation)):
        return _connections.get(latest)
    return None
