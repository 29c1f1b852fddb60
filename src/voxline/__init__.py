"""voxline: define a voice agent once, run it on the phone, SMS, the browser and the terminal.

The public API is re-exported here; everything else is importable from its module but may move.
"""

import voxline.logging  # noqa: F401  (first: library log lines go to stderr, never the chat)
from voxline.agents.runtime import Agent, AgentRuntime, BaseAgent, LLMConfig
from voxline.agents.spec import AgentSpec
from voxline.conversation.session import Session
from voxline.conversation.state import SessionState
from voxline.settings import Settings
from voxline.tools.base import RunContext, ToolOptions
from voxline.tools.decorator import tool

__all__ = [
    "Agent",
    "AgentRuntime",
    "AgentSpec",
    "BaseAgent",
    "LLMConfig",
    "RunContext",
    "Session",
    "SessionState",
    "Settings",
    "ToolOptions",
    "tool",
]
