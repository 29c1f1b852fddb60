"""PII redaction for logs."""

from __future__ import annotations

import io
import json

import structlog

from voxline.guardrails.pii import redact
from voxline.logging import configure_logging


def test_redacts_personal_data_and_keeps_the_rest() -> None:
    text = (
        "Call me at +1 (415) 555-0100 or 415-555-0199, mail ada@example.com, "
        "card 4111 1111 1111 1111, ssn 123-45-6789, order 42 costs $19.99"
    )
    out = redact(text)
    for secret in ("555-0100", "555-0199", "ada@example.com", "4111", "123-45-6789"):
        assert secret not in out
    assert "[phone]" in out and "[email]" in out and "[card]" in out and "[ssn]" in out
    assert "order 42 costs $19.99" in out


def test_log_lines_are_redacted(capsys: object) -> None:
    configure_logging("INFO", json=True)
    buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    structlog.get_logger("t").info("caller said", text="my email is bob@example.org")
    line = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert line["text"] == "my email is [email]"
