"""A Media Streams call to an agent whose `llm` is a Realtime model, over real sockets.

Twilio is the Media Streams emulator (a phone that speaks and plays in real time and echoes
marks as Twilio does); the model is the loopback fake Realtime server, reached through the
agent's `openai-realtime:ws://127.0.0.1:PORT/v1#gpt-realtime` spec exactly as a deployment would
reach OpenAI. Nothing is patched between them: the server builds the session's stand-in text
model from the spec, and no speech model may load (loading one fails the test).

One call goes through the whole of it: the greeting, a question answered in audio (the caller's
µ-law reaches the model unchanged and the model's reaches the phone unchanged), a barge-in
(Twilio `clear`, `conversation.item.truncate` with what the phone had played, the bot turn
trimmed to it), and a refund that needs a human: the model says it is checking, the approval
is given over `POST /approvals/{id}`, and the model tells the caller it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.providers.realtime_server import Call, FakeRealtimeServer, Reply
from tests.server import conftest
from tests.server.conftest import API_KEY, lookup_order, refund
from tests.server.media_emulator import MediaClient, media_call
from tests.server.test_approvals_api import api
from tests.server.twilio_emulator import (
    ACCOUNT,
    PUBLIC,
    TOKEN,
    WAIT,
    RestStandIn,
    Twilio,
    eventually,
    running,
    voice_params,
)
from voxline import Agent
from voxline.agents.spec import AgentSpec
from voxline.audio import mulaw_encode
from voxline.conversation.turns import TurnKind
from voxline.providers.realtime.history import heard_text
from voxline.server import ServerConfig, create_app
from voxline.settings import Settings
from voxline.store.sql import SqlStore
from voxline.tools.base import ToolOptions
from voxline.tools.decorator import FunctionTool

CALLER = "+14155550100"
GREETING = "Hi, this is the shop. How can I help?"
HOURS = "We open at nine every day."
RETURNS = (
    "Returns are free for thirty days. Bring the item and the receipt to any store, or send it "
    "back by post with the label in the box, and we refund the card you paid with."
)
CHECKING = "Let me check that with a colleague."
DONE = "Good news: your refund of twenty dollars is done."


def noise(seed: int, seconds: float) -> bytes:
    """µ-law bytes no codec would leave alone by accident: any change to them shows."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, int(8000 * seconds), dtype=np.uint8).tobytes()


def speech(seconds: float, pitch: float) -> bytes:
    """A loud tone as 8 kHz µ-law: speech to the fake server's VAD."""
    t = np.arange(int(8000 * seconds)) / 8000
    return mulaw_encode((np.sin(2 * np.pi * pitch * t) * 8000).astype(np.int16))


SAY_GREETING, SAY_HOURS, SAY_RETURNS = noise(1, 0.4), noise(2, 0.5), noise(3, 3.0)
SAY_CHECKING, SAY_DONE = noise(4, 0.4), noise(5, 0.4)
ASK_HOURS, ASK_RETURNS, ASK_REFUND = speech(0.5, 220), speech(0.5, 330), speech(0.5, 440)

SCRIPT = [
    Reply(GREETING, SAY_GREETING, delay=0.01),
    Reply(HOURS, SAY_HOURS, delay=0.01, user="When do you open?"),
    Reply(RETURNS, SAY_RETURNS, chunk=1600, delay=0.02, user="How do returns work?"),
    Reply(call=Call("refund", {"order_id": "A17", "amount": 20}), user="Refund order A17."),
    Reply(CHECKING, SAY_CHECKING, delay=0.01),
    Reply(DONE, SAY_DONE, delay=0.01),
]


def realtime_agent(url: str) -> Agent:
    return Agent(
        name="shop",
        instructions="You are the shop's phone assistant.",
        greeting=GREETING,
        llm=f"openai-realtime:{url}#gpt-realtime",
        tools=[
            FunctionTool(lookup_order),
            FunctionTool(refund, options=ToolOptions(needs_approval=True)),
        ],
        twilio={"transport": "media_streams"},
    )


@pytest.fixture(autouse=True)
def no_speech_models(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(spec: AgentSpec, *, vad: str = "local", **_: object) -> Any:
        raise AssertionError("a Realtime agent loaded speech models")

    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", refuse)


@contextlib.asynccontextmanager
async def server(
    tmp_path: Path, rest_base: str, agent: Agent
) -> AsyncIterator[tuple[Twilio, SqlStore]]:
    """voxline serving `agent`, with no test double for its model: the spec decides."""
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")
    await store.open()
    settings = Settings(
        data_dir=tmp_path,
        llm="fake",
        public_url=PUBLIC,
        twilio_auth_token=TOKEN,
        twilio_account_sid=ACCOUNT,
        twilio_api_base_url=rest_base,
        api_key=API_KEY,
        shutdown_grace_period=5.0,
    )
    app = create_app(ServerConfig(agents=[agent], settings=settings, store=store))
    try:
        async with running(app) as (base, _):
            yield Twilio(base), store
    finally:
        await store.close()


async def heard(phone: MediaClient, size: int) -> bytes:
    await eventually(lambda: len(phone.heard) >= size)
    await phone.quiet(0.3)
    return bytes(phone.heard)


async def test_a_realtime_agent_on_media_streams(
    tmp_path: Path, rest: tuple[RestStandIn, str]
) -> None:
    async with (
        FakeRealtimeServer(SCRIPT) as model,
        server(tmp_path, rest[1], realtime_agent(model.ws_url)) as (twilio, store),
    ):
        response = await twilio.post("/twilio/voice", voice_params(CALLER))
        assert response.status_code == 200, response.text
        async with media_call(twilio, ET.fromstring(response.text)) as phone:
            conn = await model.connection()
            # the agent sends its session.update just after the socket opens
            await eventually(lambda: bool(conn.of("session.update")))
            session = conn.of("session.update")[0]["session"]
            µlaw = {"type": "audio/pcmu"}
            assert (
                session["audio"]["input"]["format"] == session["audio"]["output"]["format"] == µlaw
            )
            assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 600
            assert {t["name"] for t in session["tools"]} >= {"lookup_order", "refund", "end_call"}

            # The greeting, said by the model, reaches the phone byte for byte.
            assert await heard(phone, len(SAY_GREETING)) == SAY_GREETING
            assert GREETING in conn.of("response.create")[0]["response"]["instructions"]

            # A question: the caller's µ-law reaches the model as sent, the answer the phone.
            await phone.say(ASK_HOURS)
            assert await heard(phone, len(SAY_GREETING + SAY_HOURS)) == SAY_GREETING + SAY_HOURS
            assert ASK_HOURS in bytes(conn.audio)

            # A long answer, cut off a second in.
            await phone.say(ASK_RETURNS)
            before = len(SAY_GREETING + SAY_HOURS)
            await eventually(lambda: len(phone.heard) >= before + 8000)
            await phone.say(ASK_REFUND)
            await eventually(lambda: bool(phone.events("clear")) and bool(conn.truncations))
            [truncation] = conn.truncations
            # What the phone had played when `clear` came, less the echo and barge-in latency
            # (a few frames here; more on a loaded machine), and never more.
            played_ms = (phone.heard_at_clear - before) / 8
            cut_ms = truncation["audio_end_ms"]
            assert played_ms - 250 <= cut_ms <= played_ms + 20, (truncation, played_ms)
            assert 1000 <= cut_ms < 3000

            # The refund waits for a human; the model says so.
            await heard(phone, phone.heard_at_clear + len(SAY_CHECKING))
            pending = conn.outputs[0]["output"]
            assert "pending" in pending and conftest.refunds == []
            [approval] = (await api(twilio.base, "GET", "/approvals")).json()["approvals"]
            decided = await api(
                twilio.base, "POST", f"/approvals/{approval['id']}", json={"decision": "approve"}
            )
            assert decided.status_code == 200, decided.text
            await heard(phone, phone.heard_at_clear + len(SAY_CHECKING + SAY_DONE))
            assert conftest.refunds == [("A17", 20.0)]
            [result] = conn.outputs[1:]
            assert result["output"] == "refunded $20.00 on A17"
            calls = [e["item"] for e in conn.of("conversation.item.create")]
            assert calls[-2]["type"] == "function_call" and calls[-2]["name"] == "refund"

            played = bytes(phone.heard)
            cut = phone.heard_at_clear - before
            assert played == SAY_GREETING + SAY_HOURS + SAY_RETURNS[:cut] + SAY_CHECKING + SAY_DONE
            await phone.stop()

        await eventually(lambda: conn.ws.state.name != "OPEN")  # the call closed the model's
        records = await _turns(store)

    users = [r["data"]["content"] for r in records if r["kind"] == TurnKind.USER_TEXT]
    assert users == ["When do you open?", "How do returns work?", "Refund order A17."]
    bots = [
        (r["data"]["content"], r["data"]["interrupted"]) for r in records if r["kind"] == "bot_text"
    ]
    assert bots[:2] == [(GREETING, False), (HOURS, False)]
    cut_text, interrupted = bots[2]
    assert interrupted and cut_text == heard_text(RETURNS, cut_ms, 3000)  # the share played
    assert 10 < len(cut_text) < len(RETURNS)
    assert bots[3:] == [(CHECKING, False), (DONE, False)]
    kinds = [r["kind"] for r in records]
    assert kinds.count("tool_call") == kinds.count("tool_result") == 2  # pending, then approved


async def _turns(store: SqlStore) -> list[dict[str, Any]]:
    """The call's turns once the session has written them through (it does so on hang-up)."""

    async def written() -> bool:
        conversations = await store.list_conversations(subject=f"phone:{CALLER}")
        if not conversations:
            return False
        records = await store.load_turns(conversations[0].id)
        return sum(1 for r in records if r["kind"] == "bot_text") >= 5

    await eventually(written)
    [conversation] = await store.list_conversations(subject=f"phone:{CALLER}")
    return await store.load_turns(conversation.id)


async def test_the_agent_hangs_up_after_its_goodbye_has_played(
    tmp_path: Path, rest: tuple[RestStandIn, str]
) -> None:
    goodbye = noise(6, 0.6)
    script = [
        Reply(GREETING, SAY_GREETING, delay=0.01),
        Reply(call=Call("end_call", {"reason": "the caller is done"}), user="That's all, bye."),
        Reply("Goodbye, thanks for calling.", goodbye, chunk=800, delay=0.02),
    ]
    async with (
        FakeRealtimeServer(script) as model,
        server(tmp_path, rest[1], realtime_agent(model.ws_url)) as (twilio, _),
    ):
        response = await twilio.post("/twilio/voice", voice_params(CALLER))
        async with media_call(twilio, ET.fromstring(response.text)) as phone:
            await heard(phone, len(SAY_GREETING))
            await phone.say(ASK_HOURS)
            async with asyncio.timeout(WAIT):
                await phone.ws.wait_closed()
            # Closed by us, and only once the whole goodbye had played.
            assert bytes(phone.heard) == SAY_GREETING + goodbye
            assert phone.ws.close_code == 1000
