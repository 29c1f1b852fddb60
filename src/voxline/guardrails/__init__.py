"""Guardrails: personal data kept out of logs, checks on what callers say and agents answer.

`pii.py` and `redact.py` mask logs; the rest is per agent (`AgentSpec.guardrails`, see
docs/guardrails.md): input checks before the model, an LLM classifier beside the reply, a
filter on the reply stream, redaction of stored transcripts. Custom checks register here.
"""

from voxline.guardrails.checks import (
    GuardrailContext,
    Rewrite,
    Trip,
    UnknownGuardrailError,
    get_guardrail,
    guardrail,
)

__all__ = [
    "GuardrailContext",
    "Rewrite",
    "Trip",
    "UnknownGuardrailError",
    "get_guardrail",
    "guardrail",
]
