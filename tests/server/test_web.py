"""The browser channel on a real loopback server: the page, and calls over `/web/call` with
speech providers keyed on loudness (see browser.py) and a scripted model."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus

from tests.server.conftest import EnvFactory, lookup_order, shop_agent
from voxline import Agent
from voxline.agents.spec import AgentSpec
from voxline.conversation.turns import BotTurn, UserTurn, turn_from_record
from voxline.providers.llm.fake import FakeReply, FakeToolCall
from voxline.tools.decorator import FunctionTool
from voxline.voice.providers import SpeechProviders

from .browser import (
    FRAME,
    QUESTION,
    RATE,
    SECONDS_PER_CHAR,
    STOP,
    TONE,
    BrowserCall,
    browser_call,
    fake_speech,
    tone,
)

GREETING = "Hello there, how can I help?"
REPLY = "It will be sunny all day."
LONG_REPLY = (
    "It will be sunny all day today in the city. "
    "Expect a light breeze later in the afternoon. "
    "Tomorrow looks much the same as today does."
)
QUESTION_AUDIO = np.concatenate([tone(0, 0.3), tone(QUESTION, 0.6), tone(0, 1.0)])


def helper(**turn: Any) -> Agent:
    return Agent(
        name="helper",
        instructions="You help people in their browser.",
        greeting=GREETING,
        tools=[FunctionTool(lookup_order)],
        turn={"min_interruption_duration": 0.3, **turn},
    )


@pytest.fixture(autouse=True)
def speech(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[SpeechProviders]]:
    """Every call's speech models are the fakes (the server's pool loads them once)."""
    loaded: list[SpeechProviders] = []

    async def load(spec: AgentSpec, *, vad: str = "local", **_: object) -> SpeechProviders:
        loaded.append(fake_speech())
        return loaded[-1]

    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", load)
    yield loaded


def spoken_samples(text: str) -> int:
    """Samples the fake TTS makes for `text`, padded to whole frames as the pacer sends them."""
    samples = round(len(text) * SECONDS_PER_CHAR * RATE)
    return -(-samples // FRAME) * FRAME


async def greeted(call: BrowserCall) -> dict[str, Any]:
    """Wait for the hello and for the whole greeting to have played."""
    hello = await call.event("hello")
    await call.event("transcript", role="bot", text=GREETING)
    await call.wait_for(lambda: call.bot_audio().size >= spoken_samples(GREETING))
    await asyncio.sleep(0.1)  # the last confirmations reach the server
    return hello


async def until_quiet(call: BrowserCall) -> None:
    """Wait until bot audio has stopped arriving (the reply has played out)."""
    sent = -1
    while sent != len(call.audio):
        sent = len(call.audio)
        await asyncio.sleep(0.3)


async def stored_turns(env: Any, conversation_id: str) -> list[Any]:
    await env.idle()
    return [turn_from_record(r) for r in await env.store.load_turns(conversation_id)]


# -- the page ------------------------------------------------------------------------------
async def test_the_page_has_the_controls_and_fetches_nothing_from_elsewhere(
    make_env: EnvFactory,
) -> None:
    async with make_env(agents=[helper(), shop_agent()]) as env:
        base = env.twilio.base
        async with httpx.AsyncClient(base_url=base) as client:
            page = await client.get("/")
            assets = {
                name: await client.get(f"/web/static/{name}")
                for name in ("app.js", "mic-worklet.js", "style.css")
            }
            other = await client.get("/?agent=shop")
            missing = await client.get("/?agent=nobody")
            hidden = await client.get("/web/static/..%2Fweb_routes.py")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for control in ('id="talk"', "Start talking", 'id="message"', 'id="state"', 'id="transcript"'):
        assert control in html
    assert '<h1 id="agent-name">helper</h1>' in html
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert [r.status_code for r in assets.values()] == [200, 200, 200]
    assert assets["app.js"].headers["content-type"].startswith("text/javascript")
    assert "registerProcessor" in assets["mic-worklet.js"].text
    for text in [html, *(r.text for r in assets.values())]:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), "external URL"
    assert '<h1 id="agent-name">shop</h1>' in other.text
    assert missing.status_code == 404 and hidden.status_code == 404


# -- calls ---------------------------------------------------------------------------------
async def test_a_spoken_question_is_answered_in_text_and_audio(make_env: EnvFactory) -> None:
    async with make_env([FakeReply(REPLY, token_delay=0.01)], agents=[helper()]) as env:
        async with browser_call(env.twilio.base) as call:
            hello = await greeted(call)
            assert hello["input_rate"] == 16000 and hello["output_rate"] == RATE
            assert hello["agent"] == "helper" and not hello["resumed"]
            greeting_audio = call.bot_audio().size
            await call.speak(QUESTION_AUDIO)
            user = await call.event("transcript", role="user")
            assert user["text"] == "what's the weather"
            bot = await call.event("transcript", role="bot", text=REPLY)
            assert not bot["interrupted"]
            deltas = [e["delta"] for e in call.of("bot_text") if e["turn_id"] == bot["turn_id"]]
            assert "".join(deltas) == REPLY and len(deltas) > 1  # streamed, then final
            await call.wait_for(
                lambda: call.bot_audio().size >= greeting_audio + spoken_samples(REPLY)
            )
            [metrics] = await call.wait_for(lambda: call.of("metrics"))
            assert metrics["turn_id"] == user["turn_id"] and metrics["voice_to_voice_ms"] >= 0
        reply_audio = call.bot_audio()[greeting_audio:]
        assert np.count_nonzero(reply_audio == TONE) == round(len(REPLY) * SECONDS_PER_CHAR * RATE)
        ends = [end for end, _ in call.audio]
        assert ends == sorted(ends)  # positions only move forward
        assert {"thinking", "speaking", "listening"} <= {e["state"] for e in call.of("state")}
        assert call.of("clear") == [] and call.of("error") == []
        turns = await stored_turns(env, hello["conversation_id"])
        assert [(type(t), t.content) for t in turns] == [
            (BotTurn, GREETING),
            (UserTurn, "what's the weather"),
            (BotTurn, REPLY),
        ]
        [record] = await env.store.list_conversations(subject=None, limit=10)
        assert record.subject is not None and record.subject.startswith("web:")
        assert record.channel == "web"


async def test_typed_text_gets_a_reply_and_tool_calls_are_shown(make_env: EnvFactory) -> None:
    script = [
        FakeReply(tool_calls=[FakeToolCall("lookup_order", {"order_id": "A7"})]),
        FakeReply("Your order arrives Friday."),
    ]
    async with (
        make_env(script, agents=[helper()]) as env,
        browser_call(env.twilio.base) as call,
    ):
        await greeted(call)
        await call.type("  where is order A7?  ")
        await call.event("transcript", role="user", text="where is order A7?")
        started = await call.event("tool", status="started")
        finished = await call.event("tool", status="finished")
        await call.event("transcript", role="bot", text="Your order arrives Friday.")
    assert started["name"] == "lookup_order" and json.loads(started["arguments"]) == {
        "order_id": "A7"
    }
    assert finished["call_id"] == started["call_id"]
    assert finished["result"] == "order A7 shipped yesterday, arriving Friday"
    assert env.llm.requests[0].messages[-1].content == "where is order A7?"


async def test_speaking_over_the_bot_clears_its_audio_and_trims_its_turn(
    make_env: EnvFactory,
) -> None:
    script = [FakeReply(LONG_REPLY, token_delay=0.02), FakeReply("Okay, stopping.")]
    async with make_env(script, agents=[helper()]) as env:
        async with browser_call(env.twilio.base) as call:
            hello = await greeted(call)
            before = len(call.audio)
            await call.type("what's the weather")
            await call.wait_for(lambda: len(call.audio) > before + 10)  # the reply is playing
            await call.speak(np.concatenate([tone(STOP, 0.7), tone(0, 1.0)]), pace=0.02)
            await call.event("clear")
            cut = await call.event("transcript", role="bot", interrupted=True)
            await call.event("transcript", role="user", text="stop please")
            await call.event("transcript", role="bot", text="Okay, stopping.")
        assert 0 < len(cut["text"]) < len(LONG_REPLY) and LONG_REPLY.startswith(cut["text"])
        turns = await stored_turns(env, hello["conversation_id"])
        [trimmed] = [t for t in turns if isinstance(t, BotTurn) and t.interrupted]
        assert trimmed.content == cut["text"]


async def test_typing_while_the_bot_speaks_cuts_it_off(make_env: EnvFactory) -> None:
    script = [FakeReply(LONG_REPLY), FakeReply("Sure.")]
    async with (
        make_env(script, agents=[helper()]) as env,
        browser_call(env.twilio.base) as call,
    ):
        await greeted(call)
        before = len(call.audio)
        await call.type("weather?")
        await call.wait_for(lambda: len(call.audio) > before + 5)
        await call.type("never mind")
        await call.event("clear")
        await call.event("transcript", role="bot", interrupted=True)
        await call.event("transcript", role="bot", text="Sure.")


async def test_malformed_frames_are_reported_and_ignored(make_env: EnvFactory) -> None:
    bad: list[str | bytes] = [
        "not json",
        "[1, 2]",
        json.dumps({"type": "dance"}),
        json.dumps({"type": "text", "text": "   "}),
        json.dumps({"type": "text", "text": "x" * 5000}),
        json.dumps({"type": "played", "position": "soon"}),
        json.dumps({"type": "played", "position": -1}),
        b"\x01\x02\x03",
        b"",
        bytes(64000),
    ]
    async with (
        make_env([FakeReply(REPLY)], agents=[helper()]) as env,
        browser_call(env.twilio.base) as call,
    ):
        await greeted(call)
        for frame in bad:
            await call.ws.send(frame)
        errors = await call.wait_for(lambda: len(call.of("error")) >= 10 and call.of("error"))
        await call.type("still there?")
        await call.event("transcript", role="bot", text=REPLY)
    messages = " | ".join(e["message"] for e in errors)
    for reason in ("not JSON", "not a JSON object", "unknown message type", "odd number"):
        assert reason in messages
    assert "empty audio frame" in messages and "over 1 s" in messages


async def test_a_dropped_socket_ends_the_call_with_its_turns_stored(make_env: EnvFactory) -> None:
    async with make_env([FakeReply(REPLY)], agents=[helper()]) as env:
        async with browser_call(env.twilio.base) as call:
            hello = await greeted(call)
            await call.type("hi")
            await call.event("transcript", role="bot", text=REPLY)
            call.ws.transport.abort()  # no close frame: the tab crashed or the network went
        turns = await stored_turns(env, hello["conversation_id"])
        assert [t.content for t in turns] == [GREETING, "hi", REPLY]
        assert env.hub.stats().active_calls == 0


async def test_a_browser_conversation_can_be_resumed_but_no_other(make_env: EnvFactory) -> None:
    async with make_env([FakeReply(REPLY), FakeReply("Welcome back.")], agents=[helper()]) as env:
        base = env.twilio.base
        async with browser_call(base) as first:
            hello = await greeted(first)
            await first.type("remember me")
            await first.event("transcript", role="bot", text=REPLY)
        conversation = hello["conversation_id"]
        await env.idle()
        async with browser_call(base, {"conversation": conversation}) as again:
            resumed = await again.event("hello")
            await again.wait_for(lambda: len(again.of("transcript")) >= 3)
            await again.type("I'm back")
            await again.event("transcript", role="bot", text="Welcome back.")
        assert resumed["resumed"] and resumed["conversation_id"] == conversation
        assert list(again.transcript("bot").values())[:2] == [GREETING, REPLY]
        assert [m.content for m in env.llm.requests[-1].messages[1:4]] == [
            GREETING,
            "remember me",
            REPLY,
        ]
        await env.store.upsert_conversation(
            (await env.store.get_conversation(conversation)).model_copy(  # type: ignore[union-attr]
                update={"subject": "phone:+14155550100"}
            )
        )
        for query, reason in [
            ({"conversation": conversation}, "no browser conversation"),
            ({"conversation": "conv_nope"}, "no browser conversation"),
            ({"agent": "nobody"}, "no agent named 'nobody'"),
            ({"output_rate": "96000"}, "output_rate"),
        ]:
            async with browser_call(base, query) as refused:
                error = await refused.event("error")
                await refused.wait_for(lambda r=refused: r.ws.close_code is not None)  # type: ignore[misc]
            assert reason in error["message"] and refused.ws.close_code == 1008
            assert refused.of("hello") == []


async def test_a_page_from_another_site_cannot_open_a_call(make_env: EnvFactory) -> None:
    async with make_env(agents=[helper()]) as env:
        base = env.twilio.base
        with pytest.raises(InvalidStatus) as refused:
            async with browser_call(base, origin="http://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        async with browser_call(base, {"output_rate": "48000"}, origin=base) as call:
            hello = await call.event("hello")
        assert hello["output_rate"] == 48000


# -- the real speech models ----------------------------------------------------------------
@pytest.mark.slow
async def test_a_spoken_question_gets_spoken_reply_with_the_local_models(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("faster_whisper", reason="needs the local extra")
    pytest.importorskip("piper", reason="needs the piper extra")
    from tests.voice.speech import QUESTION as SPOKEN
    from tests.voice.speech import espeak
    from voxline.audio import resample
    from voxline.providers.factory import create_stt, create_vad
    from voxline.providers.tts.piper import create_piper_tts

    voice = espeak(SPOKEN, tmp_path)
    caller = resample(voice.pcm, voice.sample_rate, RATE)
    speech = SpeechProviders(create_stt("local"), create_piper_tts(variation=0.0), create_vad())

    async def load(spec: AgentSpec, *, vad: str = "local", **_: object) -> SpeechProviders:
        return speech

    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", load)
    reply = "Sure thing. It will be sunny."
    async with (
        make_env([FakeReply(reply)], agents=[Agent(name="tester")]) as env,
        browser_call(env.twilio.base, {"output_rate": str(RATE)}) as call,
    ):
        await call.event("hello")
        await call.speak(caller)
        user = await call.event("transcript", role="user")
        await call.event("transcript", role="bot", text=reply)
        await call.wait_for(lambda: call.of("metrics"))
        await until_quiet(call)
    assert "tomorrow" in user["text"].lower()
    # Whisper tiny.en hears "sure" as "your" when the audio starts on the word: lead in with
    # half a second of silence, as a listener has before the bot speaks.
    heard = await speech.stt.transcribe(np.concatenate([tone(0, 0.5), call.bot_audio()]))
    assert re.sub(r"[^a-z ]", "", heard.text.lower()).split() == [
        "sure",
        "thing",
        "it",
        "will",
        "be",
        "sunny",
    ]
