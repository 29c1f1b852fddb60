"""A tool call's outcome kind, read from the `ToolOutcome` a `tool_finished` event carries.

The executor decides the kind (ok, error, timeout, circuit_open, invalid_arguments, unknown_tool,
pending_approval, rejected) and logs it, but the outcome object carries only `is_error`, the text
the model reads, `approval_id` and `attempts`. Metrics need the kind without touching the
executor, so it is recovered here: an explicit `kind` attribute wins if the outcome ever grows
one; otherwise the executor's fixed wording tells timeouts, open circuits and refusals apart.
Everything else that failed is `error`. The set of kinds is closed, so it is safe as a label.
"""

from __future__ import annotations

from voxline.tools.base import OUTCOME_KINDS, ToolOutcome

_FAILED = "the tool failed: "


def outcome_kind(outcome: ToolOutcome) -> str:
    explicit = getattr(outcome, "kind", None)
    if isinstance(explicit, str) and explicit in OUTCOME_KINDS:
        return explicit
    if not outcome.is_error:
        waiting = outcome.approval_id is not None and outcome.attempts == 0
        return "pending_approval" if waiting else "ok"
    content = outcome.content
    if content.startswith("A human declined"):
        return "rejected"
    if not content.startswith(_FAILED):
        return "error"
    reason = content[len(_FAILED) :]
    if reason.startswith("timed out after "):
        return "timeout"
    if " is unavailable after repeated failures" in reason:
        return "circuit_open"
    if reason.startswith("no tool named "):
        return "unknown_tool"
    return "error"
