"""Suite-wide fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands under test configure structlog for the whole process (level, renderer); put the
    defaults back so one test's log level never hides another test's captured log lines."""
    yield
    structlog.reset_defaults()
