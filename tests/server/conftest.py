"""A voxline server on loopback with a scripted model, a real SQLite store and Twilio's REST API
stood in by another loopback server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.server.twilio_emulator import ACCOUNT, PUBLIC, TOKEN, RestStandIn, Twilio, running
from voxline import Agent, RunContext
from voxline.agents.runtime import AgentRuntime
from voxline.providers.llm.fake import FakeLLM, FakeReply, Responder
from voxline.server import ServerConfig, create_app
from voxline.server.hub import ConversationHub
from voxline.server.runner import GracefulServer
from voxline.settings import Settings
from voxline.store.sql import SqlStore
from voxline.tools.base import ToolOptions
from voxline.tools.decorator import FunctionTool

API_KEY = "approvals-key-for-tests"
refunds: list[tuple[str, float]] = []


def lookup_order(order_id: str, ctx: RunContext) -> str:
    """Look up where an order is.

    Args:
        order_id: The order number.
    """
    return f"order {order_id} shipped yesterday, arriving Friday"


def refund(order_id: str, amount: float) -> str:
    """Refund an order.

    Args:
        order_id: The order to refund.
        amount: How much, in dollars.
    """
    refunds.append((order_id, amount))
    return f"refunded ${amount:.2f} on {order_id}"


def shop_agent(**twilio: Any) -> Agent:
    options = {"transfer_to": "+18005550199", **twilio}
    return Agent(
        name="shop",
        instructions="You are the shop's phone assistant.",
        greeting="Hi, this is the shop. How can I help?",
        tools=[
            FunctionTool(lookup_order),
            FunctionTool(refund, options=ToolOptions(needs_approval=True)),
        ],
        twilio=options,
    )


@dataclass
class Env:
    twilio: Twilio
    hub: ConversationHub
    llm: FakeLLM
    store: SqlStore
    server: GracefulServer
    rest: RestStandIn

    async def conversation_id(self, subject: str = "phone:+14155550100") -> str:
        [record] = await self.store.list_conversations(subject=subject)
        return record.id

    async def idle(self) -> None:
        """Wait until no conversation is live, i.e. every turn is written through."""
        from tests.server.twilio_emulator import eventually

        await eventually(lambda: self.hub.stats().live_conversations == 0)


EnvFactory = Callable[..., contextlib.AbstractAsyncContextManager[Env]]


@pytest.fixture
async def rest() -> AsyncIterator[tuple[RestStandIn, str]]:
    stand_in = RestStandIn()
    async with running(stand_in.app()) as (base, _):
        yield stand_in, base


@pytest.fixture
def make_env(tmp_path: Path, rest: tuple[RestStandIn, str]) -> EnvFactory:
    stand_in, rest_base = rest

    @contextlib.asynccontextmanager
    async def make(
        script: Sequence[FakeReply | str] | Responder = (),
        *,
        agents: Sequence[AgentRuntime] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Env]:
        store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")
        await store.open()
        llm = FakeLLM(script if callable(script) else list(script))
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "llm": "fake",
            "public_url": PUBLIC,
            "twilio_auth_token": TOKEN,
            "twilio_account_sid": ACCOUNT,
            "twilio_api_base_url": rest_base,
            "api_key": API_KEY,
            "shutdown_grace_period": 5.0,
        }
        values.update(overrides)
        config = ServerConfig(
            agents=list(agents) if agents is not None else [shop_agent()],
            settings=Settings(**values),
            llm=lambda agent: llm,
            store=store,
        )
        app = create_app(config)
        try:
            async with running(app) as (base, server):
                assert isinstance(server, GracefulServer)
                yield Env(Twilio(base), app.state.hub, llm, store, server, stand_in)
        finally:
            await store.close()

    refunds.clear()
    return make
