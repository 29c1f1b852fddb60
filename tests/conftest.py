"""Suite-wide fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from voxline.guardrails.redact import reset_redaction
from voxline.logging import uninstall_stdlib_redaction


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands under test configure structlog for the whole process (level, renderer); put the
    defaults back so one test's log level never hides another test's captured log lines."""
    yield
    structlog.reset_defaults()
    uninstall_stdlib_redaction()
    reset_redaction()
