"""One agent that both listens and speaks through hosted providers, on a Media Streams call.

The agent is JSON, as a user writes it: `"stt": "deepgram:nova-3", "tts": "elevenlabs:voice-1"`,
the same with Cartesia, and OpenAI for both (`openai:gpt-4o-transcribe` hears,
`openai:gpt-4o-mini-tts` speaks in the agent's `voice`). The server is real (webhook, call
token, media socket, voice pipeline, speech pool) and builds the providers from its own
settings, which hold the fakes' keys and base URLs (nothing in the environment). Twilio's side
is the Media Streams emulator; every provider is the loopback fake of its wire protocol. Only
the voice activity detector is a stand-in (loudness), since tones are not speech to Silero.

The call: a greeting; the caller asks a question (Deepgram hears the caller's µ-law exactly as
Twilio sent it, `encoding=mulaw&sample_rate=8000`); the agent answers in a long reply whose
µ-law (`ulaw_8000`, Cartesia `pcm_mulaw`) reaches Twilio's `media` payloads byte for byte; the
caller speaks over it; the voice's sentence in flight is stopped at the provider (ElevenLabs'
stream-input socket closed with a close frame, Cartesia's context cancelled, OpenAI's response
closed), Twilio gets `clear`, the stored reply is cut to what the caller heard, and the agent
answers the interruption.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.providers.stt_fakes import FakeDeepgram, FakeOpenAI, frames, mulaw_tone
from tests.providers.tts_fakes import API_KEY, SECONDS_PER_CHAR
from tests.server.conftest import Env, EnvFactory
from tests.server.hosted_calls import (
    GREETING,
    PACED,
    Voice,
    barge_in_call,
    check_reply_spoken_over,
    dial,
    greeted,
    hosted_voice,
    loudness_ears,
    record_errors,
    stored_turns,
)
from tests.server.media_emulator import FRAME, SILENCE, MediaClient, media_call
from tests.server.twilio_emulator import eventually
from voxline import Agent
from voxline.agents.spec import AgentSpec

pytest.importorskip("deepgram", reason="needs deepgram-sdk (the deepgram or dev extra)")

QUESTION, STOP = 5000, 9000  # the caller's loudness: what the recognizer fakes hear
PHRASES = {QUESTION: "what time do you open", STOP: "stop stop I need a person"}
ASKED = mulaw_tone(QUESTION, 1.0)
INTERRUPTS = mulaw_tone(STOP, 1.2)
# A long first sentence: however the speaker cuts it (its opening phrase goes early), the
# caller speaks over it while the voice is still generating it.
REPLY = (
    "Our store opens at nine every weekday morning and then it stays open for the whole day "
    "until six in the evening when the last customers leave the building. "
    "On Saturdays we open at ten and close at four in the afternoon. "
    "The website takes orders at any hour."
)
AFTER = "Sure, who would you like to talk to?"
DEEPGRAM_KEY = "dg-test-key"

PAIRS: dict[str, dict[str, str]] = {
    # the agent's speech settings, as its JSON names them
    "deepgram+elevenlabs": {"stt": "deepgram:nova-3", "tts": "elevenlabs:voice-1"},
    "deepgram+cartesia": {"stt": "deepgram:nova-3", "tts": "cartesia:voice-2"},
    "openai+openai": {
        "stt": "openai:gpt-4o-transcribe",
        "tts": "openai:gpt-4o-mini-tts",
        "voice": "coral",
    },
}


def agent_json(pair: str) -> str:
    return json.dumps(
        {
            "name": "shop",
            "instructions": "You are the shop's phone assistant.",
            "greeting": GREETING,
            "twilio": {"transport": "media_streams"},
            **PAIRS[pair],
        }
    )


@dataclass
class Providers:
    voice: Voice
    deepgram: FakeDeepgram | None
    transcriber: FakeOpenAI | None
    settings: dict[str, Any]


@contextlib.asynccontextmanager
async def providers(pair: str) -> AsyncIterator[Providers]:
    """The pair's fakes, running, and the server settings that point at them."""
    listener, speaker = pair.split("+")
    if listener == "openai":  # one OpenAI base URL serves speech and transcription
        transcriber = FakeOpenAI(PHRASES, api_key=API_KEY)
        async with hosted_voice(speaker, PACED, others=transcriber.app()) as voice:
            yield Providers(voice, None, transcriber, voice.settings)
        return
    deepgram = FakeDeepgram(PHRASES, api_key=DEEPGRAM_KEY)
    async with deepgram, hosted_voice(speaker, PACED) as voice:
        settings = {"deepgram_api_key": DEEPGRAM_KEY, "deepgram_base_url": deepgram.url}
        yield Providers(voice, deepgram, None, voice.settings | settings)


@pytest.fixture(autouse=True)
def loudness_vad(monkeypatch: pytest.MonkeyPatch) -> None:
    loudness_ears(monkeypatch)


async def converse(env: Env) -> tuple[MediaClient, bytes]:
    """Greeted; a question; the caller speaks over the answer; the agent answers that."""
    return await barge_in_call(env, lambda phone: phone.say(ASKED), INTERRUPTS, after=0.8)


@pytest.mark.parametrize("pair", list(PAIRS))
async def test_a_call_heard_and_spoken_by_hosted_providers_with_barge_in(
    pair: str, make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = record_errors(monkeypatch)
    agent = Agent(AgentSpec.model_validate_json(agent_json(pair)))
    async with providers(pair) as fakes:
        env_for = make_env([REPLY, AFTER], agents=[agent], **fakes.settings)
        async with env_for as env:
            phone, greeting = await converse(env)
            turns = await stored_turns(env)
            requests = env.llm.requests
    voice = fakes.voice

    # The caller was heard: the question, then the interruption.
    said = [t["data"]["content"] for t in turns if t["kind"] == "user_text"]
    assert said == [PHRASES[QUESTION], PHRASES[STOP]]
    assert requests[0].messages[-1].content == PHRASES[QUESTION]
    if fakes.deepgram is not None:  # the caller's µ-law as Twilio sent it, nothing else
        [conn] = fakes.deepgram.connections
        assert conn.query["encoding"] == "mulaw" and conn.query["sample_rate"] == "8000"
        assert conn.query["model"] == "nova-3"
        audio = bytes(conn.audio)
        assert ASKED in audio and INTERRUPTS in audio
        assert set(frames(audio, FRAME)) <= {SILENCE, ASKED[:FRAME], INTERRUPTS[:FRAME]}
        assert conn.controls[-1] == {"type": "CloseStream"}
    if fakes.transcriber is not None:
        assert {r["model"] for r in fakes.transcriber.requests} == {"gpt-4o-transcribe"}

    # The agent spoke: the greeting untouched, the reply stopped at the provider midway, and
    # the stored reply is what the caller heard of it.
    bot = [(t["data"]["content"], bool(t["data"].get("interrupted"))) for t in turns]
    bot = [b for b, t in zip(bot, turns, strict=True) if t["kind"] == "bot_text"]
    asked, cut = check_reply_spoken_over(voice, phone, greeting, bot, reply=REPLY, after=AFTER)
    check_cancelled(voice, asked[-1][0])
    assert len(phone.events("clear")) == 1
    if voice.provider != "openai":  # after the clear: the answer to the interruption, exactly
        assert bytes(phone.heard[phone.heard_at_clear :]).startswith(voice.said(AFTER))
    heard = heard_of_reply([s[0] for s in asked], (phone.heard_at_clear - len(greeting)) / 8000)
    # Never more than was heard; short of it by at most a word or two (the word under way at
    # the clear and the marks' round trip; measured 2-13 characters).
    assert heard - 30 <= len(cut) <= heard + 3, (cut, REPLY[:heard])
    assert errors == []  # nothing failed: no error events


def check_cancelled(voice: Voice, sentence: str) -> None:
    """The provider's own way of stopping the sentence in flight was used."""
    if voice.provider == "elevenlabs":
        [stream] = [s for s in voice.fake.streams if s.text.strip() == sentence]
        assert stream.query["output_format"] == "ulaw_8000"
        opened, text, end = stream.messages  # stream-input: open, the text flushed, end
        assert opened["text"] == " " and text == {"text": sentence + " ", "flush": True}
        assert end == {"text": ""}
        assert stream.closed_early and stream.close_code == 1000  # closed, not dropped
    elif voice.provider == "cartesia":
        [context] = [c for c in voice.fake.contexts.values() if c.transcript.strip() == sentence]
        first, last = context.requests
        assert first["continue"] is True and first["output_format"]["encoding"] == "pcm_mulaw"
        assert last["transcript"] == "" and last["continue"] is False
        assert context.cancelled
    else:
        [request] = [r for r in voice.fake.requests if r.body["input"] == sentence]
        assert not request.complete and request.body["voice"] == "coral"


def heard_of_reply(pieces: list[str], seconds: float) -> int:
    """Characters of REPLY spoken in its first `seconds`, the voice having been asked for
    `pieces` of it (the fakes speak `SECONDS_PER_CHAR` per character of each piece; the spaces
    between pieces take no time)."""
    position = 0
    for piece in pieces:
        start = REPLY.index(piece, position)
        if seconds < len(piece) * SECONDS_PER_CHAR:
            return start + int(seconds / SECONDS_PER_CHAR)
        seconds -= len(piece) * SECONDS_PER_CHAR
        position = start + len(piece)
    return position


async def test_a_recognizer_lost_mid_turn_falls_back_without_losing_the_turn(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`deepgram:nova-3,openai:gpt-4o-transcribe`: Deepgram's socket dies while the caller asks
    the question and the reconnect is refused (401: retrying cannot help), so OpenAI transcribes
    the turn from its audio; the agent answers it aloud. Each step is an `error` event."""
    errors = record_errors(monkeypatch)
    spec = json.loads(agent_json("openai+openai"))
    agent = Agent(
        AgentSpec.model_validate(spec | {"stt": "deepgram:nova-3,openai:gpt-4o-transcribe"})
    )
    transcriber = FakeOpenAI(PHRASES, api_key=API_KEY)
    deepgram = FakeDeepgram(PHRASES, api_key=DEEPGRAM_KEY)
    voice_fake = hosted_voice("openai", others=transcriber.app())
    async with deepgram, voice_fake as voice:
        settings = voice.settings | {
            "deepgram_api_key": DEEPGRAM_KEY,
            "deepgram_base_url": deepgram.url,
        }
        async with make_env([REPLY], agents=[agent], **settings) as env:
            async with media_call(env.twilio, await dial(env)) as phone:
                greeting = await greeted(phone)
                asking = asyncio.create_task(phone.say(ASKED))
                await asyncio.sleep(0.5)
                deepgram.refuse = 401
                (await deepgram.connection(0)).drop()
                await asking
                await eventually(lambda: len(phone.heard) > len(greeting))  # answered aloud
                await phone.stop()
            turns = await stored_turns(env)
            requests = env.llm.requests
    assert [t["data"]["content"] for t in turns if t["kind"] == "user_text"] == [PHRASES[QUESTION]]
    assert requests[0].messages[-1].content == PHRASES[QUESTION]
    assert len(deepgram.connections) == 1 and deepgram.attempts == 2  # the reconnect refused
    assert transcriber.requests and {r["model"] for r in transcriber.requests} == {
        "gpt-4o-transcribe"
    }
    assert [e["where"] for e in errors] == ["stt", "stt"]
    assert all("deepgram:nova-3" in str(e["error"]) for e in errors)
