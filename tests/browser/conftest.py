"""The browser tests reuse the server tests' loopback server (`make_env`), and skip with a reason
where Chromium or Playwright is missing (CI installs Debian's chromium: .ci/run)."""

from __future__ import annotations

import shutil

import pytest

from tests.server.conftest import make_env, rest

__all__ = ["make_env", "rest"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = None
    try:
        import playwright  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and not shutil.which("chromium"):
        reason = "Debian's chromium is not installed (apt-get install chromium)"
    if reason is None and not shutil.which("espeak-ng"):
        reason = "espeak-ng is not installed: it makes the fake microphone's question"
    if reason is None:
        return
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=reason))
