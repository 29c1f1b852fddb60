"""The browser channel with an agent whose `llm` is a Realtime model, over real sockets.

The page is the browser stand-in of browser.py; the model is the loopback fake Realtime server,
reached through the agent's `openai-realtime:ws://127.0.0.1:PORT/v1#gpt-realtime` spec. No
speech model may load. The page sends 16 kHz and plays 48 kHz here, the model hears and speaks
PCM16 at 24 kHz: both directions are resampled, once per stream. What the page confirms played
is what a barge-in truncates the model's item to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.providers.realtime_server import Call, FakeRealtimeServer, Reply
from tests.server.conftest import EnvFactory, lookup_order
from tests.server.twilio_emulator import WAIT, eventually
from voxline import Agent
from voxline.agents.spec import AgentSpec
from voxline.conversation.turns import BotTurn, UserTurn, turn_from_record
from voxline.tools.decorator import FunctionTool

from .browser import QUESTION, STOP, BrowserCall, browser_call, tone

MODEL_RATE = 24000
PAGE_RATE = 48000
LOUD = 3000  # the fake model's voice
MS_PER_CHAR = 20
GREETING = "Hello there, how can I help?"
ANSWER = "It will be sunny all day."
LONG = (
    "It will be sunny all day today in the city. Expect a light breeze later in the "
    "afternoon. Tomorrow looks much the same as today does."
)
STOPPING = "Sure, I will stop."
WELCOME = "You're welcome."
GOODBYE = "Goodbye, have a nice day."


def spoken(text: str) -> bytes:
    """The fake model saying `text`: PCM16 at 24 kHz, 20 ms a character."""
    samples = len(text) * MS_PER_CHAR * MODEL_RATE // 1000
    return np.full(samples, LOUD, dtype="<i2").tobytes()


def say(text: str, *, user: str = "", chunk: float = 0.1, delay: float = 0.02) -> Reply:
    return Reply(text, spoken(text), chunk=round(chunk * MODEL_RATE) * 2, delay=delay, user=user)


def helper(url: str) -> Agent:
    return Agent(
        name="helper",
        instructions="You help people in their browser.",
        greeting=GREETING,
        llm=f"openai-realtime:{url}#gpt-realtime",
        tools=[FunctionTool(lookup_order)],
    )


@pytest.fixture(autouse=True)
def no_speech_models(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(spec: AgentSpec, *, vad: str = "local", **_: object) -> Any:
        raise AssertionError("a Realtime agent loaded speech models")

    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", refuse)


def page_ms(call: BrowserCall, rate: int = PAGE_RATE) -> int:
    """Milliseconds of the model's voice the page has been sent (resampling edges aside)."""
    pcm = np.abs(call.bot_audio().astype(np.int32))
    return int(np.count_nonzero(np.abs(pcm - LOUD) < 200) * 1000 / rate)


def loud_ms(audio: bytes | bytearray, level: int) -> int:
    """Milliseconds of `level` in 24 kHz PCM16 the model heard."""
    pcm = np.frombuffer(bytes(audio), dtype="<i2").astype(np.int32)
    return int(np.count_nonzero(np.abs(pcm - level) < 200) * 1000 / MODEL_RATE)


def question(amplitude: int) -> npt.NDArray[np.int16]:
    return np.concatenate([tone(amplitude, 0.5), tone(0, 0.8)])


async def test_a_realtime_agent_in_the_browser(make_env: EnvFactory) -> None:
    script = [
        say(GREETING),
        say(ANSWER, user="What's the weather?"),
        say(LONG, user="And tomorrow?", chunk=0.1, delay=0.05),
        say(STOPPING, user="Stop please."),
        say(WELCOME),
    ]
    async with (
        FakeRealtimeServer(script) as model,
        make_env(agents=[helper(model.ws_url)]) as env,
    ):
        async with browser_call(env.twilio.base, {"output_rate": str(PAGE_RATE)}) as call:
            hello = await call.event("hello")
            assert (hello["input_rate"], hello["output_rate"]) == (16000, PAGE_RATE)
            conn = await model.connection()
            # the agent sends its session.update just after the socket opens
            await eventually(lambda: bool(conn.of("session.update")))
            session = conn.of("session.update")[0]["session"]
            pcm24 = {"type": "audio/pcm", "rate": MODEL_RATE}
            assert session["audio"]["input"]["format"] == pcm24
            assert session["audio"]["output"]["format"] == pcm24

            # The greeting, said by the model, reaches the page at the page's rate.
            await call.event("transcript", role="bot", text=GREETING)
            await call.wait_for(lambda: page_ms(call) >= len(GREETING) * MS_PER_CHAR - 40)
            assert GREETING in conn.of("response.create")[0]["response"]["instructions"]

            # A question: the caller's 16 kHz reaches the model at 24 kHz; the answer plays.
            await call.speak(question(QUESTION), pace=0.02)
            await call.event("transcript", role="user", text="What's the weather?")
            await call.event("transcript", role="bot", text=ANSWER)
            assert loud_ms(conn.audio, QUESTION) >= 480
            heard = len(GREETING + ANSWER) * MS_PER_CHAR
            await call.wait_for(lambda: page_ms(call) >= heard - 60)
            await asyncio.sleep(0.2)  # the last confirmations reach the server

            # A long answer the page has played one second of when the caller cuts in.
            before = len(call.audio)
            call.confirm = False
            await call.speak(question(QUESTION + 1000), pace=0.02)
            await call.wait_for(lambda: page_ms(call) >= heard + 1500)
            origin = call.audio[before - 1][0]  # where the long answer starts on the timeline
            played = max(end for end, _ in call.audio[before:] if end <= origin + 1.0)
            await call.ws.send(json.dumps({"type": "played", "position": played}))
            await asyncio.sleep(0.1)
            stop = asyncio.create_task(call.speak(question(STOP), pace=0.02))
            await call.event("clear")
            call.confirm = True  # the page plays what comes next
            await stop
            await model_saw(lambda: bool(conn.truncations))
            [truncation] = conn.truncations
            assert 980 <= truncation["audio_end_ms"] <= 1010, truncation
            cut = await call.event("transcript", role="bot", interrupted=True)
            assert LONG.startswith(cut["text"])
            assert abs(len(cut["text"]) * MS_PER_CHAR - 1000) <= 150, cut
            await call.event("transcript", role="bot", text=STOPPING)
            await until_quiet(call)  # heard whole: the typed text cuts nothing off

            # Typed text reaches the model as the caller's words, and is answered aloud.
            await call.type("Thanks!")
            await call.event("transcript", role="bot", text=WELCOME)
            typed = [e["item"] for e in conn.of("conversation.item.create")][-1]
            assert typed["role"] == "user" and typed["content"][0]["text"] == "Thanks!"
            await asyncio.sleep(0.3)
            conversation = hello["conversation_id"]
        await env.idle()
        turns = [turn_from_record(r) for r in await env.store.load_turns(conversation)]

    users = [t.content for t in turns if isinstance(t, UserTurn)]
    assert users == ["What's the weather?", "And tomorrow?", "Stop please.", "Thanks!"]
    bots = [(t.content, t.interrupted) for t in turns if isinstance(t, BotTurn)]
    assert bots[:2] == [(GREETING, False), (ANSWER, False)]
    assert bots[2] == (cut["text"], True)
    assert bots[3:] == [(STOPPING, False), (WELCOME, False)]


async def until_quiet(call: BrowserCall) -> None:
    """Wait until the model's audio has stopped arriving, and its confirmations are in."""
    sent = -1
    while sent != len(call.audio):
        sent = len(call.audio)
        await asyncio.sleep(0.3)


async def model_saw(check: Any) -> None:
    async with asyncio.timeout(WAIT):
        while not check():  # noqa: ASYNC110 (polling a test fixture)
            await asyncio.sleep(0.01)


async def test_the_agent_ends_a_browser_call_after_its_goodbye(make_env: EnvFactory) -> None:
    script = [
        say(GREETING),
        Reply(call=Call("end_call", {"reason": "the user is done"}), user="That's all."),
        say(GOODBYE),
    ]
    async with (
        FakeRealtimeServer(script) as model,
        make_env(agents=[helper(model.ws_url)]) as env,
        browser_call(env.twilio.base) as call,
    ):
        await call.event("transcript", role="bot", text=GREETING)
        with contextlib.suppress(ConnectionClosed):  # the call may end before the silence
            await call.speak(question(QUESTION), pace=0.02)
        end = await call.event("end")
        async with asyncio.timeout(WAIT):
            await call.ws.wait_closed()
        assert end == {"type": "end", "reason": "the user is done"}
        assert call.ws.close_code == 1000
        # closed only once the goodbye had all been sent and confirmed
        assert page_ms(call, MODEL_RATE) >= len(GREETING + GOODBYE) * MS_PER_CHAR - 60
        assert list(call.transcript("bot").values()) == [GREETING, GOODBYE]


async def test_an_unreachable_model_refuses_the_call_with_a_reason(make_env: EnvFactory) -> None:
    async with FakeRealtimeServer() as model:
        url = model.ws_url
    async with make_env(agents=[helper(url)], realtime_reconnect_attempts=0) as env:
        async with browser_call(env.twilio.base) as call:
            error = await call.event("error")
            await call.wait_for(lambda: call.ws.close_code is not None)
        assert "cannot be reached" in error["message"]
        assert call.ws.close_code == 1011
