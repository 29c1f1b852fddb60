"""What a session needs from an agent, and the two ways to provide it.

`AgentRuntime` is a structural protocol: any object with `instructions()`, `llm_config()` and
`tools()` drives a session, which keeps tests and one-off scripts free of inheritance. `BaseAgent`
adds defaults from an `AgentSpec` and registers subclasses by name so JSON and the CLI can refer
to Python agents. `Agent` is the everyday concrete form.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

import structlog

from voxline.agents.spec import AgentSpec, ToolSpec
from voxline.providers.llm.base import ConfigurationError
from voxline.tools.base import Tool, ToolOptions
from voxline.tools.client import ClientTool
from voxline.tools.registry import UnknownToolError, get_tool

log = structlog.get_logger("voxline.agents")


@dataclass(frozen=True)
class LLMConfig:
    """Model choice and sampling options for one agent."""

    spec: str | None = None  # None: the process default (Settings.llm)
    temperature: float | None = None
    max_tokens: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class AgentRuntime(Protocol):
    def instructions(self) -> str: ...

    def llm_config(self) -> LLMConfig: ...

    def tools(self) -> Sequence[Tool]: ...


def agent_spec_of(agent: AgentRuntime) -> AgentSpec:
    """The spec behind an agent, or defaults for a plain object that has none."""
    spec = getattr(agent, "spec", None)
    if isinstance(spec, AgentSpec):
        return spec
    return AgentSpec(name=str(getattr(agent, "name", "agent")) or "agent")


class BaseAgent:
    """Defaults from an `AgentSpec`; subclasses register by name: `class X(BaseAgent, name=...)`."""

    registry: ClassVar[dict[str, type[BaseAgent]]] = {}
    agent_name: ClassVar[str] = ""

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.agent_name = name or cls.__dict__.get("agent_name") or cls.__name__.lower()
        if cls.agent_name in BaseAgent.registry:
            log.info("agent class replaced", agent=cls.agent_name)
        BaseAgent.registry[cls.agent_name] = cls

    def __init__(self, spec: AgentSpec | None = None, *, tools: Sequence[Tool] = ()) -> None:
        self.spec = spec or AgentSpec(name=self.agent_name or "agent")
        self._extra_tools = list(tools)

    @property
    def name(self) -> str:
        return self.spec.name

    def instructions(self) -> str:
        return self.spec.instructions

    def llm_config(self) -> LLMConfig:
        return LLMConfig(
            spec=self.spec.llm,
            temperature=self.spec.temperature,
            max_tokens=self.spec.max_tokens,
            options=dict(self.spec.model_options),
        )

    def tools(self) -> Sequence[Tool]:
        """The spec's named tools (from the tool registry, with per-agent overrides) plus any
        given directly; an unknown name is a configuration error, not a silent gap."""
        resolved = [_resolve(ts) for ts in self.spec.tool_specs()]
        names = {t.name for t in self._extra_tools}
        tools = [*self._extra_tools, *(t for t in resolved if t.name not in names)]
        gated = set(self.spec.approvals.tools)
        unknown = gated - {t.name for t in tools}
        if unknown:
            raise ConfigurationError(
                f"approvals.tools names {', '.join(sorted(unknown))}, which the agent does not have"
            )
        return [
            _with_overrides(t, None, {"needs_approval": True})
            if t.name in gated and not t.options.needs_approval
            else t
            for t in tools
        ]


def _resolve(tool_spec: ToolSpec) -> Tool:
    if tool_spec.kind == "client":
        return _client_tool(tool_spec)
    try:
        tool = get_tool(tool_spec.name)
    except UnknownToolError as exc:
        raise ConfigurationError(
            f"agent names tool {tool_spec.name!r}, but no tool of that name is registered "
            f"(decorate a function with @voxline.tool and import its module): {exc}"
        ) from None
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "timeout": tool_spec.timeout,
            "retries": tool_spec.retries,
            "needs_approval": tool_spec.needs_approval,
        }.items()
        if v is not None
    }
    if overrides or tool_spec.description:
        tool = _with_overrides(tool, tool_spec.description, overrides)
    return tool


def _client_tool(tool_spec: ToolSpec) -> Tool:
    defaults = ToolOptions()
    options = ToolOptions(
        timeout=tool_spec.timeout or defaults.timeout,
        retries=tool_spec.retries or 0,
        needs_approval=bool(tool_spec.needs_approval),
    )
    parameters = tool_spec.parameters or {"type": "object", "properties": {}}
    return ClientTool(tool_spec.name, tool_spec.description or "", parameters, options)


def _with_overrides(tool: Tool, description: str | None, options: dict[str, Any]) -> Tool:
    """A shallow copy, so one agent's overrides never leak into the shared registry entry."""
    clone = copy.copy(tool)
    clone.options = replace(tool.options, **options)
    if description:
        clone.description = description
    return clone


class Agent(BaseAgent, name="agent"):
    """The convenient concrete agent: `Agent(name=..., instructions=..., tools=[fn, ...])`."""

    def __init__(
        self,
        spec: AgentSpec | None = None,
        *,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        **fields: Any,
    ) -> None:
        if spec is None:
            fields.setdefault("name", "agent")
            spec = AgentSpec(**fields)
        elif fields:
            spec = spec.model_copy(update=fields)
        super().__init__(spec, tools=[_as_tool(t) for t in tools])

    @classmethod
    def from_json(cls, path: str) -> Agent:
        from voxline.agents.spec import load_agent_spec

        return cls(load_agent_spec(path))


def _as_tool(item: Tool | Callable[..., Any]) -> Tool:
    if isinstance(item, Tool):
        return item
    from voxline.tools.decorator import tool as make_tool

    made = make_tool(item)
    assert isinstance(made, Tool)
    return made


def agent_class(name: str) -> type[BaseAgent]:
    try:
        return BaseAgent.registry[name]
    except KeyError:
        known = ", ".join(sorted(BaseAgent.registry)) or "none"
        raise ConfigurationError(f"no agent class named {name!r} (registered: {known})") from None
