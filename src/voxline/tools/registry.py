"""Process-wide tool names, so an agent written as JSON can refer to a Python tool by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import structlog

from voxline.tools.base import Tool

_log = structlog.get_logger("voxline.tools")
_tools: dict[str, Tool] = {}

T = TypeVar("T", bound=Tool)


class UnknownToolError(KeyError):
    """No tool has that name; the message lists the ones that exist, for humans and models."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        names = ", ".join(sorted(available)) or "none"
        super().__init__(f"no tool named {name!r}; available tools: {names}")

    def __str__(self) -> str:
        # KeyError would show the repr of the message, quotes and all.
        return str(self.args[0])


def register_tool(tool: T) -> T:
    """Make `tool` findable by name. Re-registering a name replaces the old tool (module reloads
    during development re-run decorators, and the newest definition is the one meant)."""
    if tool.name in _tools and _tools[tool.name] is not tool:
        _log.info("tool replaced in registry", tool=tool.name)
    _tools[tool.name] = tool
    return tool


def get_tool(name: str) -> Tool:
    try:
        return _tools[name]
    except KeyError:
        raise UnknownToolError(name, _tools) from None


def all_tools() -> dict[str, Tool]:
    """A snapshot by name; registering more tools later does not change it."""
    return dict(_tools)
