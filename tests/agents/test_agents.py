"""Agent specs as JSON, the runtime protocol, the registry and the schema command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from voxline import Agent, AgentRuntime, AgentSpec, BaseAgent, tool
from voxline.agents.runtime import agent_class
from voxline.agents.spec import load_agent_spec
from voxline.cli import app
from voxline.providers.llm.base import ConfigurationError


@tool(name="spec_lookup", timeout=3)
def spec_lookup(query: str) -> str:
    """Look something up.

    Args:
        query: What to look for.
    """
    return query


def test_spec_round_trips_through_json(tmp_path: Path) -> None:
    spec = AgentSpec(
        name="support",
        instructions="Help.",
        llm="openai:gpt-4.1-mini",
        greeting="Hello",
        tools=["spec_lookup", {"name": "spec_lookup", "timeout": 9, "needs_approval": True}],
    )
    path = tmp_path / "agent.json"
    path.write_text(spec.model_dump_json())
    loaded = load_agent_spec(path)
    assert loaded == spec
    assert loaded.tool_specs()[1].timeout == 9


def test_invalid_agent_json_names_the_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "temperature": 7, "turn": {"interruptible": "maybe"}}))
    with pytest.raises(ConfigurationError) as err:
        load_agent_spec(path)
    message = str(err.value)
    assert "temperature" in message and "turn.interruptible" in message
    assert "\n" not in message
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_agent_spec(path)
    with pytest.raises(ConfigurationError, match="not found"):
        load_agent_spec(tmp_path / "missing.json")


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match="instruction"):
        AgentSpec.model_validate({"name": "x", "instruction": "typo"})


def test_named_tools_resolve_with_per_agent_overrides() -> None:
    agent = Agent(AgentSpec(name="a", tools=[{"name": "spec_lookup", "timeout": 9}]))
    [resolved] = agent.tools()
    assert resolved.name == "spec_lookup" and resolved.options.timeout == 9
    assert spec_lookup.options.timeout == 3  # the registry's tool is untouched


def test_unknown_tool_name_is_a_configuration_error() -> None:
    agent = Agent(AgentSpec(name="a", tools=["no_such_tool"]))
    with pytest.raises(ConfigurationError, match="no_such_tool"):
        agent.tools()


def test_subclasses_register_by_name() -> None:
    class Concierge(BaseAgent, name="concierge"):
        def instructions(self) -> str:
            return "You are a concierge."

    assert agent_class("concierge") is Concierge
    agent = agent_class("concierge")()
    assert isinstance(agent, AgentRuntime)
    assert agent.instructions() == "You are a concierge."
    assert agent.llm_config().spec is None
    with pytest.raises(ConfigurationError, match="concierge"):
        agent_class("nobody")


def test_agent_accepts_plain_functions_as_tools() -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers.

        Args:
            a: First.
            b: Second.
        """
        return a + b

    agent = Agent(name="calc", tools=[add], temperature=0.2)
    [calc] = agent.tools()
    assert calc.name == "add"
    assert set(calc.parameters["properties"]) == {"a", "b"}
    assert agent.llm_config().temperature == 0.2


def test_schema_command_prints_the_json_schema() -> None:
    result = CliRunner().invoke(app, ["agents", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "AgentSpec"
    assert {"name", "instructions", "llm", "tools", "turn", "summarization"} <= set(
        schema["properties"]
    )


def test_validate_command_reports_problems(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"name": "ok"}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "has spaces"}))
    runner = CliRunner()
    assert runner.invoke(app, ["agents", "validate", str(good)]).exit_code == 0
    result = runner.invoke(app, ["agents", "validate", str(bad)])
    assert result.exit_code == 2 and "name" in result.stderr


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("chat", "agents", "version"):
        assert command in result.stdout
