"""A Media Streams call end to end with a hosted recognizer: an agent JSON with
`"stt": "deepgram:nova-3"` (or Flux), the server on loopback, Twilio's side emulated, and
Deepgram played by the loopback fake of its WebSocket protocol (its key and base URL from the
environment, as an operator would set them; the voice tests hand theirs over as `Settings`).

The caller's µ-law reaches the fake byte for byte (no decode/encode/resample on the way); the
fake's transcript becomes the user turn and the agent answers aloud; an agent asking for
`turn.end_of_turn = "provider"` is answered on the provider's end of turn, not after its own
long silence; interim words stop the agent mid-sentence (barge-in); a socket dropped while the
caller speaks is reconnected without losing the turn, and reported as an `error` event.

VAD and TTS are the loudness-keyed fakes of browser.py (the recognizer is the point here), so
the caller "says" a phrase by the amplitude of the tone it sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.providers.stt_fakes import FakeDeepgram, frames, mulaw_tone
from tests.server.browser import LoudnessVAD, ToneTTS
from tests.server.conftest import EnvFactory
from tests.server.hosted_calls import CALLER, dial, greeted, stored_turns, user_turns
from tests.server.media_emulator import SILENCE, media_call
from tests.server.twilio_emulator import eventually
from voxline import Agent
from voxline.agents.spec import AgentSpec

pytest.importorskip("deepgram", reason="needs deepgram-sdk (the deepgram or dev extra)")

GREETING = "Hello, this is the shop."
QUESTION = 5000  # the caller's amplitude: what the fake hears as the question
STOP = 9000
PHRASES = {QUESTION: "what time do you open", STOP: "stop stop I need a person"}
REPLY = "We open at nine every morning."
LONG_REPLY = (
    "Our store opens at nine every weekday morning and closes at six in the evening, and on "
    "Saturdays we open at ten and close at four, while on Sundays the store stays closed."
)


@pytest.fixture(autouse=True)
def fake_voice_and_vad(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's TTS and the VAD are fakes; its STT comes from the real factory."""
    monkeypatch.setattr("voxline.voice.providers.create_tts", lambda *a, **k: ToneTTS())
    monkeypatch.setattr("voxline.voice.providers.create_vad", lambda *a, **k: LoudnessVAD())


@pytest.fixture
async def deepgram(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(PHRASES, api_key="dg-test-key") as fake:
        monkeypatch.setenv("VOXLINE_DEEPGRAM_API_KEY", "dg-test-key")
        monkeypatch.setenv("VOXLINE_DEEPGRAM_BASE_URL", fake.url)
        yield fake


def hosted_agent(stt: str = "deepgram:nova-3", **turn: Any) -> Agent:
    spec = {
        "name": "phone",
        "instructions": "You are the shop's phone assistant.",
        "greeting": GREETING,
        "stt": stt,
        "twilio": {"transport": "media_streams"},
        "turn": turn,
    }
    return Agent(AgentSpec.model_validate(spec))


async def test_the_callers_mulaw_reaches_deepgram_and_its_words_are_answered(
    make_env: EnvFactory, deepgram: FakeDeepgram
) -> None:
    said = mulaw_tone(QUESTION, 1.0)
    async with make_env([REPLY], agents=[hosted_agent()]) as env:
        async with media_call(env.twilio, await dial(env)) as phone:
            await greeted(phone)
            before = len(phone.events("media"))
            await phone.say(said)
            await eventually(lambda: len(phone.events("media")) > before)  # the answer, aloud
            await phone.quiet()
            await phone.stop()
            await phone.ws.wait_closed()
        conn = deepgram.connections[0]
        assert await user_turns(env) == ["what time do you open"]
        [request] = env.llm.requests
        assert request.messages[-1].content == "what time do you open"
    assert conn.query["encoding"] == "mulaw" and conn.query["sample_rate"] == "8000"
    assert conn.query["model"] == "nova-3"
    assert conn.headers["Authorization"] == "Token dg-test-key"
    audio = bytes(conn.audio)
    assert said in audio  # the caller's bytes, unchanged
    assert set(frames(audio, 160)) <= {SILENCE, said[:160]}  # and nothing else but silence
    assert conn.controls[-1] == {"type": "CloseStream"}  # the call's end closes the stream


@pytest.mark.parametrize("model", ["nova-3", "flux-general-en"])
async def test_an_agent_that_asks_for_it_is_answered_on_the_providers_end_of_turn(
    make_env: EnvFactory, deepgram: FakeDeepgram, model: str
) -> None:
    """The agent's own silence is 2.5 s; Nova's UtteranceEnd comes 1 s after the last word
    and Flux's EndOfTurn 0.5 s after it, so the answer starts long before 2.5 s."""
    agent = hosted_agent(f"deepgram:{model}", end_of_turn="provider", end_of_turn_silence=2.5)
    loop = asyncio.get_running_loop()
    async with make_env([REPLY], agents=[agent]) as env:
        async with media_call(env.twilio, await dial(env)) as phone:
            await greeted(phone)
            await phone.say(mulaw_tone(QUESTION, 1.0))
            spoken = loop.time()
            await eventually(lambda: bool(env.llm.requests))
            waited = loop.time() - spoken
            await phone.stop()
        assert await user_turns(env) == ["what time do you open"]
    assert waited < 2.0, waited
    sent = [m.get("type") for m in deepgram.connections[0].sent]
    assert ("UtteranceEnd" if model == "nova-3" else "TurnInfo") in sent
    assert deepgram.connections[0].path == ("/v1/listen" if model == "nova-3" else "/v2/listen")


async def test_interim_words_stop_the_agent_mid_sentence(
    make_env: EnvFactory, deepgram: FakeDeepgram
) -> None:
    async with make_env([LONG_REPLY, REPLY], agents=[hosted_agent()]) as env:
        async with media_call(env.twilio, await dial(env)) as phone:
            await greeted(phone)
            before = len(phone.events("media"))
            await phone.say(mulaw_tone(QUESTION, 1.0))
            await eventually(lambda: len(phone.events("media")) > before + 50)  # 1 s of reply
            await phone.say(mulaw_tone(STOP, 1.2))
            await eventually(lambda: bool(phone.events("clear")))
            await eventually(lambda: len(env.llm.requests) == 2)
            await phone.quiet()
            await phone.stop()
        turns = await stored_turns(env)  # written through when the call ends
    bot = [t["data"] for t in turns if t["kind"] == "bot_text"]
    cut = next(t for t in bot if t.get("interrupted"))
    assert LONG_REPLY.startswith(cut["content"]) and cut["content"] != LONG_REPLY
    assert [t["data"]["content"] for t in turns if t["kind"] == "user_text"] == [
        "what time do you open",
        "stop stop I need a person",
    ]


async def test_a_socket_dropped_while_the_caller_speaks_loses_no_word(
    make_env: EnvFactory, deepgram: FakeDeepgram
) -> None:
    errors: list[dict[str, Any]] = []
    async with make_env([REPLY], agents=[hosted_agent()]) as env:
        async with media_call(env.twilio, await dial(env)) as phone:
            await greeted(phone)
            call = env.hub.calls.latest(await env.conversation_id(f"phone:{CALLER}"))
            assert call is not None
            call.session.on("error", lambda **event: errors.append(event))
            speaking = asyncio.create_task(phone.say(mulaw_tone(QUESTION, 1.0)))
            await asyncio.sleep(0.5)
            (await deepgram.connection(0)).drop()
            await speaking
            await eventually(lambda: bool(env.llm.requests))
            await phone.stop()
        assert await user_turns(env) == ["what time do you open"]
    assert len(deepgram.connections) == 2
    assert mulaw_tone(QUESTION, 1.0) in bytes(deepgram.connections[1].audio)  # the re-send
    [error] = errors
    assert error["where"] == "stt" and "deepgram:nova-3" in str(error["error"])
