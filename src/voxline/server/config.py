"""What a server hosts: agents (with their Twilio options), settings and pluggable parts.

`ServerConfig` is the one argument of `create_app`, so tests and embedding applications give the
server exactly the store, model, SMS sender and caller resolver they want, and `voxline serve`
builds the same object from the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from voxline.agents.runtime import Agent, AgentRuntime, agent_spec_of
from voxline.agents.spec import AgentSpec, load_agent_spec
from voxline.agents.twilio import TwilioOptions
from voxline.channels.twilio_sms import SmsSender
from voxline.identity.base import SubjectResolver
from voxline.providers.llm.base import LLM, ConfigurationError
from voxline.settings import Settings, load_settings
from voxline.store.base import EventBroker, Store

LLMProvider = Callable[[AgentRuntime], LLM]


@dataclass(frozen=True)
class HostedAgent:
    runtime: AgentRuntime
    spec: AgentSpec
    twilio: TwilioOptions

    @property
    def name(self) -> str:
        return self.spec.name


def host_agent(runtime: AgentRuntime) -> HostedAgent:
    spec = agent_spec_of(runtime)
    return HostedAgent(runtime, spec, spec.twilio)


@dataclass
class ServerConfig:
    """Everything `create_app` needs. Unset parts get production defaults: the store from the
    settings' database URL, the LLM from each agent's spec, Twilio's REST API for late SMS
    replies (when an account SID and token are set), phone-number subjects, and the event
    broker from the settings (Redis when configured, else in-process)."""

    agents: Sequence[AgentRuntime]
    settings: Settings = field(default_factory=load_settings)
    default_agent: str | None = None  # serves /twilio/voice and /twilio/sms; default: the first
    llm: LLMProvider | None = None
    store: Store | None = None
    sms_sender: SmsSender | None = None
    subject_resolver: SubjectResolver | None = None
    broker: EventBroker | None = None  # debug feeds between workers; default from the settings

    def hosted(self) -> dict[str, HostedAgent]:
        hosted: dict[str, HostedAgent] = {}
        for runtime in self.agents:
            agent = host_agent(runtime)
            if agent.name in hosted:
                raise ConfigurationError(f"two agents are named {agent.name!r}")
            hosted[agent.name] = agent
        if not hosted:
            raise ConfigurationError("the server needs at least one agent")
        if self.default_agent is not None and self.default_agent not in hosted:
            raise ConfigurationError(
                f"default agent {self.default_agent!r} is not hosted "
                f"(hosted: {', '.join(sorted(hosted))})"
            )
        return hosted


def load_agents(paths: Iterable[Path]) -> list[Agent]:
    """Agents from JSON files, or from every `*.json` in a directory, in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise ConfigurationError(f"no agent JSON files in {path}")
            files.extend(found)
        else:
            files.append(path)
    return [Agent(load_agent_spec(file)) for file in files]
