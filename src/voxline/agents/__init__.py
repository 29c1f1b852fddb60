"""Agents: the JSON spec, the runtime protocol a session drives, and the registry of classes."""

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
