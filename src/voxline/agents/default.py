"""The embedded default agent: what `voxline chat` and `make run` talk to with no configuration."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from voxline.agents.runtime import Agent
from voxline.agents.spec import AgentSpec
from voxline.tools.decorator import tool


@tool
def current_time(timezone: str = "UTC") -> str:
    """Tell the current date and time.

    Args:
        timezone: An IANA time zone name such as "Europe/Paris" or "America/New_York".
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {timezone!r}; use an IANA name like Europe/Paris"
    return dt.datetime.now(zone).strftime("%A %d %B %Y, %H:%M %Z")


DEFAULT_SPEC = AgentSpec(
    name="assistant",
    description="A friendly general assistant; runs on the embedded local models by default.",
    instructions=(
        "You are voxline's demo assistant, talking with a person by voice or text. Answer in one "
        "or two short, plain sentences that sound natural when spoken: no lists, no markdown. "
        "Use a tool only when the question needs it."
    ),
    greeting="Hi, I'm the voxline assistant. How can I help?",
    tools=["current_time"],
)


def default_agent() -> Agent:
    return Agent(DEFAULT_SPEC, tools=[current_time])
