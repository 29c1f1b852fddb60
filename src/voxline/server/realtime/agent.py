"""The agent as a Realtime session sees it: its own instructions plus the client's.

A Realtime client sets `instructions` with `session.update` (and per response with
`response.create`), expecting the model to follow them. The agent behind the endpoint keeps its
own instructions too (they are what makes it that agent), so the client's are added after them,
and a response's own instructions take the place of the session's for that response only.

The session reads `instructions()` at the start of every reply, so a change applies from the
next reply without reopening anything; tools are fixed when a session starts, which is why the
bridge reopens the session when the client's tools change.
"""

from __future__ import annotations

from collections.abc import Sequence

from voxline.agents.runtime import AgentRuntime, LLMConfig
from voxline.agents.spec import AgentSpec
from voxline.server.config import HostedAgent
from voxline.tools.base import Tool

CLIENT_HEADING = "Instructions from the application you are speaking through:"


class RealtimeAgent:
    """An `AgentRuntime` over a hosted agent, with the client's instructions added."""

    def __init__(self, hosted: HostedAgent) -> None:
        self._base: AgentRuntime = hosted.runtime
        self.spec: AgentSpec = hosted.spec
        self.hosted = HostedAgent(self, hosted.spec, hosted.twilio)
        self.session_instructions = ""
        self.response_instructions: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def instructions(self) -> str:
        own = self._base.instructions()
        extra = self.response_instructions
        if extra is None:
            extra = self.session_instructions
        extra = extra.strip()
        return f"{own}\n\n{CLIENT_HEADING}\n{extra}" if extra else own

    def llm_config(self) -> LLMConfig:
        return self._base.llm_config()

    def tools(self) -> Sequence[Tool]:
        return self._base.tools()
