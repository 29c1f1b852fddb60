"""A voxline server on loopback with a scripted model, SQLite, the in-process broker, and
clients for its REST API, its debug feed and its WebSocket listeners."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.server.twilio_emulator import (
    ACCOUNT,
    PUBLIC,
    TOKEN,
    WAIT,
    RelayClient,
    Twilio,
    running,
    setup_message,
)
from voxline import Agent
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.server import ServerConfig, create_app
from voxline.server.hub import ConversationHub
from voxline.settings import Settings
from voxline.store.brokers import InProcessBroker
from voxline.store.sql import SqlStore

KEY = "bootstrap-key-for-api-tests"

BOOKING = {
    "name": "booking",
    "instructions": "You book appointments.",
    "greeting": "Hi, this is booking.",
    "tools": [
        {
            "name": "pick_slot",
            "kind": "client",
            "description": "Find a free slot on a day.",
            "parameters": {
                "type": "object",
                "properties": {"day": {"type": "string"}},
                "required": ["day"],
            },
            "timeout": 5,
        }
    ],
}


@dataclass
class ApiClient:
    """Clients for one server at `base`: REST, debug feed, listener calls, Twilio."""

    base: str
    twilio: Twilio

    def client(self, key: str | None = KEY) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=WAIT)

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with self.client() as client:
            return await client.request(method, path, **kwargs)

    def local(self, public_url: str) -> str:
        """A URL the API handed out (public, as callers see it) on our loopback server."""
        path = public_url.split(".test", 1)[1]
        return self.base.replace("http://", "ws://") + path

    @contextlib.asynccontextmanager
    async def feed(self, feed_url: str, key: str = KEY) -> AsyncIterator[Feed]:
        headers = {"Authorization": f"Bearer {key}"}
        async with connect(self.local(feed_url), additional_headers=headers) as ws:
            feed = Feed(ws)
            ready = await feed.next()
            assert ready["type"] == "feed_ready", ready
            feed.events.clear()
            yield feed

    @contextlib.asynccontextmanager
    async def listener_call(
        self, websocket_url: str, caller: str = "+14155550100"
    ) -> AsyncIterator[RelayClient]:
        """A ConversationRelay session at a WebSocket listener, signed the way Twilio signs."""
        headers = {"X-Twilio-Signature": self.twilio.sign(websocket_url)}
        async with connect(self.local(websocket_url), additional_headers=headers) as ws:
            relay = RelayClient(ws)
            await relay.send(setup_message({}, **{"from": caller}))
            yield relay

    async def create_agent(self, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.call("POST", "/api/agents", json=spec or BOOKING)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def listen(self, agent_id: str, **body: Any) -> dict[str, Any]:
        response = await self.call("POST", f"/api/agents/{agent_id}/listen", json=body)
        assert response.status_code == 201, response.text
        listener: dict[str, Any] = response.json()
        return listener


@dataclass
class ApiEnv(ApiClient):
    """A server in this process, with its hub, scripted model and store at hand."""

    hub: ConversationHub
    llm: FakeLLM
    store: SqlStore


class Feed:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            event: dict[str, Any] = json.loads(await self.ws.recv())
        self.events.append(event)
        return event

    async def until(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Read events up to the first of `kind` whose fields match."""
        while True:
            event = await self.next()
            if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))


EnvFactory = Callable[..., contextlib.AbstractAsyncContextManager[ApiEnv]]


@pytest.fixture
def make_env(tmp_path: Path) -> EnvFactory:
    @contextlib.asynccontextmanager
    async def make(
        script: Sequence[FakeReply | str] = (), **overrides: Any
    ) -> AsyncIterator[ApiEnv]:
        store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
        await store.open()
        llm = FakeLLM(list(script))
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "llm": "fake",
            "public_url": PUBLIC,
            "twilio_auth_token": TOKEN,
            "twilio_account_sid": ACCOUNT,
            "api_key": KEY,
            "shutdown_grace_period": 5.0,
        }
        values.update(overrides)
        config = ServerConfig(
            agents=[Agent(name="front-desk", instructions="You are the front desk.")],
            settings=Settings(**values),
            llm=lambda agent: llm,
            store=store,
            broker=InProcessBroker(),
        )
        app = create_app(config)
        try:
            async with running(app) as (base, _):
                yield ApiEnv(base, Twilio(base), app.state.hub, llm, store)
        finally:
            await store.close()

    return make
