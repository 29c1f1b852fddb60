"""Agents: the JSON spec, the runtime protocol a session drives, and the registry of classes."""

# First, so that log lines go to stderr, not into a program's output, from `import voxline` on.
import voxline.logging  # noqa: F401
from voxline.agents.runtime import Agent, AgentRuntime, BaseAgent, LLMConfig, agent_class
from voxline.agents.spec import AgentSpec, agent_json_schema, load_agent_spec

__all__ = [
    "Agent",
    "AgentRuntime",
    "AgentSpec",
    "BaseAgent",
    "LLMConfig",
    "agent_class",
    "agent_json_schema",
    "load_agent_spec",
]
