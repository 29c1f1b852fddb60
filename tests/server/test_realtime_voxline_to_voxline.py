"""voxline on both ends of the Realtime protocol: one server's phone agent speaks through another
server's agent, over `openai-realtime:ws://127.0.0.1:PORT/v1#agent`.

Server B hosts an agent on the cascaded pipeline (a scripted model, speech stand-ins keyed on
loudness as in the endpoint's protocol tests) and serves it at `/v1/realtime`. Server A hosts a
Media Streams agent whose `llm` names B's endpoint, with B's API key as the Realtime key (sent
because the URL is under A's `VOXLINE_OPENAI_REALTIME_BASE_URL`). The Twilio side is the Media
Streams emulator, dialled with the CallSid the voice webhook minted the call token for.

One call goes through all of it: the greeting and a question answered in audio (B's speech in
µ-law, untouched by A on its way to the phone), a barge-in (B's VAD hears the caller, A sends
Twilio `clear` and truncates B's item to what the phone played; B trims its own turn to it),
and a refund that is A's tool with `needs_approval` (B's model calls it as a client function,
A pauses it for a human, the approval is given over A's API, and B's model says it is done).
A's turn store ends with what the caller said and heard, B's with the same conversation.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.server import conftest
from tests.server.browser import TONE, LevelSTT, LoudnessVAD, ToneTTS
from tests.server.conftest import API_KEY, lookup_order, refund
from tests.server.media_emulator import MediaClient, media_call
from tests.server.test_approvals_api import api
from tests.server.twilio_emulator import (
    ACCOUNT,
    PUBLIC,
    TOKEN,
    RestStandIn,
    Twilio,
    eventually,
    running,
    voice_params,
)
from voxline import Agent
from voxline.agents.spec import AgentSpec
from voxline.audio import mulaw_decode, mulaw_encode
from voxline.conversation.turns import BotTurn, UserTurn, turn_from_record
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.providers.realtime.client import RealtimeClient
from voxline.server import ServerConfig, create_app
from voxline.settings import Settings
from voxline.store.sql import SqlStore
from voxline.tools.base import ToolOptions
from voxline.tools.decorator import FunctionTool
from voxline.voice.providers import SpeechProviders

CALLER = "+14155550100"
VOICE_AGENT = "agent"  # B's agent: the model name in A's spec
B_KEY = "server-b-key-for-tests"
GREETING = "Hi, this is the shop. How can I help?"
HOURS = "We open at nine every day."
RETURNS = (
    "Returns are free for thirty days. Bring the item and the receipt to any store, or send it "
    "back by post with the label in the box, and we refund the card you paid with, usually "
    "within a week of getting it back."
)
CHECKING = "Let me check that with a colleague."
DONE = "Good news: your refund of twenty dollars is done."
PHRASES = {5000: "when do you open", 7000: "how do returns work", 10000: "refund order A17"}
MS_PER_CHAR = 20  # the tone TTS speaks 20 ms a character


def level(amplitude: int, seconds: float) -> bytes:
    """The caller saying the phrase of `amplitude`, as Twilio's 8 kHz µ-law."""
    return mulaw_encode(np.full(round(8000 * seconds), amplitude, dtype=np.int16))


ASK_HOURS, ASK_RETURNS, ASK_REFUND = level(5000, 0.5), level(7000, 0.5), level(10000, 0.5)

SCRIPT = [
    FakeReply(GREETING),
    FakeReply(HOURS),
    FakeReply(RETURNS),
    FakeReply(tool_calls=[FakeToolCall("refund", {"order_id": "A17", "amount": 20})]),
    FakeReply(CHECKING),
    FakeReply(DONE),
]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event A's Realtime client sends B (but the audio appends), as sent."""
    events: list[dict[str, Any]] = []
    send = RealtimeClient.send

    def spy(client: RealtimeClient, event: Mapping[str, Any]) -> None:
        events.append(dict(event))
        send(client, event)

    monkeypatch.setattr(RealtimeClient, "send", spy)
    return events


@pytest.fixture(autouse=True)
def speech_stand_ins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """B's speech models (the endpoint takes them from the server's pool); A's agent must never
    ask for any: its model hears and speaks."""
    loaded: list[str] = []

    async def load(spec: AgentSpec, *, vad: str = "local", **_: object) -> SpeechProviders:
        loaded.append(spec.name)
        return SpeechProviders(LevelSTT(PHRASES, 600), ToneTTS(), LoudnessVAD())

    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", load)
    return loaded


def settings(tmp_path: Path, name: str, **values: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / name,
        llm="fake",
        public_url=PUBLIC,
        twilio_auth_token=TOKEN,
        twilio_account_sid=ACCOUNT,
        shutdown_grace_period=5.0,
        **values,
    )


@contextlib.asynccontextmanager
async def serve(
    tmp_path: Path, name: str, agent: Agent, config: Settings, llm: FakeLLM | None = None
) -> AsyncIterator[tuple[str, SqlStore]]:
    (tmp_path / name).mkdir()
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / name / 'server.db'}")
    await store.open()
    server = ServerConfig(
        agents=[agent],
        settings=config,
        store=store,
        llm=(lambda _: llm) if llm is not None else None,
    )
    try:
        async with running(create_app(server)) as (base, _):
            yield base, store
    finally:
        await store.close()


def voice_agent() -> Agent:
    """B: an ordinary cascaded agent; what the Realtime client adds is all it knows of tools."""
    return Agent(
        name=VOICE_AGENT,
        instructions="You are the shop's voice.",
        turn={"min_interruption_duration": 0.3},
    )


def phone_agent(b_ws: str) -> Agent:
    """A: a Media Streams agent spoken by B."""
    return Agent(
        name="shop",
        instructions="You are the shop's phone assistant.",
        greeting=GREETING,
        llm=f"openai-realtime:{b_ws}#{VOICE_AGENT}",
        tools=[
            FunctionTool(lookup_order),
            FunctionTool(refund, options=ToolOptions(needs_approval=True)),
        ],
        twilio={"transport": "media_streams"},
    )


def tone_ms(mulaw: bytes) -> int:
    """Milliseconds of the stand-in TTS's tone in µ-law audio (silence and edges left out)."""
    pcm = np.abs(mulaw_decode(mulaw).astype(np.int32))
    return int(np.count_nonzero(np.abs(pcm - TONE) < 300) / 8)


async def heard_ms(phone: MediaClient, at_least: int) -> int:
    """Wait until the phone has played `at_least` ms of speech and then gone quiet."""
    await eventually(lambda: tone_ms(bytes(phone.heard)) >= at_least)
    await phone.quiet(0.4)
    return tone_ms(bytes(phone.heard))


def spoken_ms(text: str) -> int:
    return len(text) * MS_PER_CHAR


async def test_a_phone_agent_spoken_by_another_voxline_server(
    tmp_path: Path,
    rest: tuple[RestStandIn, str],
    speech_stand_ins: list[str],
    sent: list[dict[str, Any]],
) -> None:
    llm = FakeLLM(SCRIPT)
    conftest.refunds.clear()
    b_settings = settings(tmp_path, "b", api_key=B_KEY)
    async with serve(tmp_path, "b", voice_agent(), b_settings, llm) as (b_base, b_store):
        b_ws = b_base.replace("http://", "ws://") + "/v1"
        a_settings = settings(
            tmp_path,
            "a",
            api_key=API_KEY,
            twilio_api_base_url=rest[1],
            openai_realtime_base_url=b_ws,
            openai_realtime_api_key=B_KEY,
        )
        async with serve(tmp_path, "a", phone_agent(b_ws), a_settings) as (a_base, a_store):
            twilio = Twilio(a_base)
            response = await twilio.post("/twilio/voice", voice_params(CALLER))
            assert response.status_code == 200, response.text
            async with media_call(twilio, ET.fromstring(response.text)) as phone:
                # The greeting, asked of B by A, and a question: both answered in audio.
                greeting = await heard_ms(phone, spoken_ms(GREETING) - 60)
                await phone.say(ASK_HOURS)
                hours = await heard_ms(phone, greeting + spoken_ms(HOURS) - 60)
                assert abs(hours - greeting - spoken_ms(HOURS)) <= 60

                # A long answer, cut off a second in.
                await phone.say(ASK_RETURNS)
                await eventually(lambda: tone_ms(bytes(phone.heard)) >= hours + 1000)
                await phone.say(ASK_REFUND)
                await eventually(lambda: bool(phone.events("clear")))
                cut_ms = tone_ms(bytes(phone.heard[: phone.heard_at_clear])) - hours
                assert 1000 <= cut_ms < spoken_ms(RETURNS) - 1000
                # B is told what the phone had played (Twilio's marks, less their latency).
                [truncate] = [e for e in sent if e["type"] == "conversation.item.truncate"]
                truncated_ms = truncate["audio_end_ms"]
                assert cut_ms - 250 <= truncated_ms <= cut_ms + 20, (truncate, cut_ms)

                # The refund waits for a human: B's model says so; then it is approved on A.
                checking = await heard_ms(phone, hours + cut_ms + spoken_ms(CHECKING) - 60)
                assert conftest.refunds == []
                [approval] = (await api(a_base, "GET", "/approvals")).json()["approvals"]
                assert approval["tool"] == "refund"
                decided = await api(
                    a_base, "POST", f"/approvals/{approval['id']}", json={"decision": "approve"}
                )
                assert decided.status_code == 200, decided.text
                done = await heard_ms(phone, checking + spoken_ms(DONE) - 60)
                assert abs(done - checking - spoken_ms(DONE)) <= 60
                assert conftest.refunds == [("A17", 20.0)]
                await phone.stop()
            a_turns = await stored(a_store, f"phone:{CALLER}", bots=5)
        b_turns = await stored(b_store, None, bots=5)

    assert speech_stand_ins == [VOICE_AGENT]  # A loaded no speech model
    # A's record: the caller's words (B's transcripts), what the caller heard, the tool calls.
    users = [t.content for t in a_turns if isinstance(t, UserTurn)]
    assert users == list(PHRASES.values())
    bots = [(t.content, t.interrupted) for t in a_turns if isinstance(t, BotTurn)]
    assert bots[:2] == [(GREETING, False), (HOURS, False)]
    cut, interrupted = bots[2]
    assert interrupted and RETURNS.startswith(cut) and 10 < len(cut) < len(RETURNS) - 40
    assert abs(len(cut) * MS_PER_CHAR - truncated_ms) < 300, (cut, truncated_ms)  # as heard
    assert bots[3:] == [(CHECKING, False), (DONE, False)]
    kinds = [t.kind for t in a_turns]
    assert kinds.count("tool_call") == kinds.count("tool_result") == 2  # pending, then approved
    # B's record: the same exchange, its long answer trimmed by A's truncation.
    b_bots = [(t.content, t.interrupted) for t in b_turns if isinstance(t, BotTurn)]
    assert b_bots[:2] == [(GREETING, False), (HOURS, False)]
    b_cut, b_interrupted = b_bots[2]
    assert b_interrupted and RETURNS.startswith(b_cut)  # cut to the words before the truncation
    assert truncated_ms - 300 < len(b_cut) * MS_PER_CHAR <= truncated_ms, (b_cut, truncated_ms)
    assert b_bots[3:] == [(CHECKING, False), (DONE, False)]
    assert llm.requests[-1].messages[-1].content == "refunded $20.00 on A17"
    # The refund crossed as a client function: pending first, then the approved call's pair.
    items = [e["item"] for e in sent if e["type"] == "conversation.item.create"]
    outputs = [i["output"] for i in items if i["type"] == "function_call_output"]
    assert "pending" in outputs[0] and outputs[1:] == ["refunded $20.00 on A17"]
    assert [i["name"] for i in items if i["type"] == "function_call"] == ["refund"]


async def stored(store: SqlStore, subject: str | None, *, bots: int) -> list[Any]:
    """A conversation's turns once its server has written them through (on hang-up)."""

    async def conversation() -> list[Any]:
        found = await store.list_conversations(subject=subject) if subject else None
        if not found:
            found = await store.list_conversations()
        if not found:
            return []
        return [turn_from_record(r) for r in await store.load_turns(found[0].id)]

    async def written() -> bool:
        return sum(isinstance(t, BotTurn) for t in await conversation()) >= bots

    await eventually(written)
    return await conversation()
