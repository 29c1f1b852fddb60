"""What the guardrail tests share: an engine harness and sessions with guardrails (the SQLite
`store` and fake-model `settings` fixtures are the suite's, in tests/conftest.py).

The session builds its engine with the agent's guardrails (`Session.start`); `wire` remains
for tests that drive an engine harness directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from voxline import Agent, Session
from voxline.agents.spec import AgentSpec
from voxline.conversation.engine import Delivery, ReplyEngine, ReplyPlan
from voxline.conversation.state import SessionState, StateMachine
from voxline.conversation.turns import BotTurn, TurnStore
from voxline.events import EventBus
from voxline.guardrails.runner import Guardrails
from voxline.providers.llm.base import LLM
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.tools.base import RunContext, Tool
from voxline.tools.executor import ToolExecutor


def spec(**guardrails: Any) -> AgentSpec:
    return AgentSpec(name="guarded", guardrails=guardrails)


def guards(*, classifier_llm: LLM | None = None, **guardrails: Any) -> Guardrails:
    """The guardrails an agent with this `guardrails` section gets."""
    return Guardrails(spec(**guardrails).guardrails, classifier_llm=classifier_llm)


class EngineHarness:
    """A `ReplyEngine` on its own: a turn store, a bus, and everything emitted."""

    def __init__(
        self,
        guardrails: Guardrails | None,
        *,
        tools: list[Tool] | None = None,
        auto_deliver: bool = True,
    ) -> None:
        self.turns = TurnStore("conv-guard")
        self.bus = EventBus()
        self.state = StateMachine(self.bus, SessionState.LISTENING)
        self.deltas: list[str] = []
        self.trips: list[dict[str, Any]] = []
        self.interrupted: list[BotTurn | None] = []
        self.bus.on("bot_text_delta", lambda turn, delta: self.deltas.append(delta))
        self.bus.on("guardrail_tripped", lambda **event: self.trips.append(event))
        self.bus.on("interrupted", lambda turn: self.interrupted.append(turn))
        self.engine = ReplyEngine(
            self.turns,
            self.bus,
            self.state,
            ToolExecutor(tools or []),
            Delivery(auto=auto_deliver),
            lambda call_id: RunContext(conversation_id="conv-guard", call_id=call_id),
            guardrails=guardrails,
        )

    async def ask(self, text: str, llm: LLM) -> BotTurn | None:
        self.turns.add_user_text(text)
        turn = await self.engine.reply(ReplyPlan(llm=llm, instructions="Be brief.", tools=[]))
        self.state.to(SessionState.LISTENING)
        return turn

    @property
    def said(self) -> str:
        return "".join(self.deltas)


def wire(session: Session, classifier_llm: LLM | None = None) -> Guardrails:
    """Give a started session's engine its agent's guardrails, as `Session.start` will."""
    engine = session._require_engine()
    guardrails = Guardrails(
        session.spec.guardrails, settings=session.settings, classifier_llm=classifier_llm
    )
    guardrails.bind(session.id, session.connection_id)
    engine.guardrails = guardrails
    return guardrails


def session_for(
    agent_spec: AgentSpec, llm: LLM, store: Store, settings: Settings, **options: Any
) -> Session:
    return Session(Agent(agent_spec), llm=llm, store=store, settings=settings, **options)


Listener = Callable[..., None]
