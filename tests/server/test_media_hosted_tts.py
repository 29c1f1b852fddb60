"""Media Streams calls spoken by hosted voices, end to end against their loopback fakes.

The server is real (webhook, call token for the CallSid the stream uses, the media socket, the
voice pipeline, the speech pool that loads the agent's voice from its spec and the settings in
the environment); the phone is the Media Streams emulator; the voices are the fakes of
tests/providers/tts_fakes.py, producing audio at about real time so a sentence is still being
synthesised when the caller speaks over it. The caller's ears are stand-ins (loudness for voice
activity, a fixed phrase for any loud audio): the point here is the voice.

ElevenLabs and Cartesia are asked for 8 kHz µ-law and the phone receives the very bytes they
sent (nothing resampled or re-encoded); OpenAI's 24 kHz PCM is resampled once. A barge-in stops
the sentence in flight at the provider: ElevenLabs' socket is closed, Cartesia's context gets
its `cancel`, OpenAI's response is closed.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from structlog.testing import capture_logs

from tests.providers.tts_fakes import (
    API_KEY,
    Behaviour,
    FakeCartesia,
    FakeElevenLabs,
    FakeOpenAISpeech,
)
from tests.server.browser import LoudnessVAD
from tests.server.conftest import Env, EnvFactory
from tests.server.media_emulator import MediaClient, media_call
from tests.server.twilio_emulator import eventually, voice_params
from voxline import Agent
from voxline.audio import mulaw_encode
from voxline.providers.stt.base import Transcript
from voxline.text.sentences import SentenceChunker

CALLER = "+14155550100"
GREETING = "Hello, this is the shop, how can I help you today?"
REPLY = (
    "Our store opens at nine every weekday morning and it closes at six in the evening, "
    "while on Saturdays we open at ten in the morning and close at four in the afternoon, "
    "and on Sundays the store is closed all day long. "
    "The website takes orders at any hour."
)
SENTENCES = SentenceChunker().feed(REPLY + " ")  # how the speaker hands REPLY to the voice
AFTER = "Sure, what is your question?"
# About real time: 50 ms of audio every 40 ms, so the speaker's look-ahead keeps each sentence
# open at the provider until its last words are about to play.
PACED = Behaviour(pace=0.04, chunk_seconds=0.05)


class LoudSTT:
    """Any loud audio is the caller asking to stop."""

    label = "loud"
    sample_rate = 16000

    async def transcribe(
        self, pcm: npt.NDArray[np.int16], *, language: str | None = None
    ) -> Transcript:
        loud = len(pcm) > 0 and int(np.abs(pcm.astype(np.int32)).max()) > 1000
        text = "hold on, I have another question" if loud else ""
        return Transcript(text, audio_duration=len(pcm) / self.sample_rate)


@pytest.fixture(autouse=True)
def stand_in_ears(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's voice is loaded for real; its ears are stand-ins."""
    monkeypatch.setattr("voxline.voice.providers.create_stt", lambda *a, **k: LoudSTT())
    monkeypatch.setattr("voxline.voice.providers.create_vad", lambda *a, **k: LoudnessVAD())


@dataclass
class Voice:
    """A hosted voice's fake, and how to read what it did for one sentence."""

    provider: str
    fake: Any

    def sentences(self) -> list[tuple[str, bytes, bool, bool]]:
        """(text, audio sent, finished, stopped early) of each sentence the call asked for."""
        if self.provider == "elevenlabs":
            return [
                (s.text.strip(), bytes(s.audio), s.final, s.closed_early)
                for s in self.fake.streams
                if s.query["output_format"] == "ulaw_8000"
            ]
        if self.provider == "cartesia":
            return [
                (c.transcript.strip(), bytes(c.audio), c.done, c.context_id in self.fake.cancels)
                for c in self.fake.contexts.values()
                if c.requests[0]["output_format"]["encoding"] == "pcm_mulaw"
            ]
        return [
            (str(r.body["input"]), bytes(r.audio), r.complete, not r.complete)
            for r in self.fake.requests
            if r.body["input"] != "Hello."  # the speech pool's warm-up
        ]

    def said(self, text: str) -> bytes:
        [audio] = [audio for said, audio, _, _ in self.sentences() if said == text]
        return audio


@contextlib.contextmanager
def environment(monkeypatch: pytest.MonkeyPatch, **values: str) -> Iterator[None]:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield


@contextlib.asynccontextmanager
async def hosted(provider: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Voice]:
    """The provider's fake, with the server's settings (environment) pointing at it."""
    fake: Any
    if provider == "elevenlabs":
        async with FakeElevenLabs(PACED) as fake:
            monkeypatch.setenv("ELEVENLABS_API_KEY", API_KEY)
            monkeypatch.setenv("VOXLINE_ELEVENLABS_BASE_URL", fake.base_url)
            yield Voice(provider, fake)
    elif provider == "cartesia":
        async with FakeCartesia(PACED) as fake:
            monkeypatch.setenv("CARTESIA_API_KEY", API_KEY)
            monkeypatch.setenv("VOXLINE_CARTESIA_BASE_URL", fake.base_url)
            yield Voice(provider, fake)
    else:
        async with FakeOpenAISpeech(PACED) as fake:
            monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
            monkeypatch.setenv("VOXLINE_OPENAI_BASE_URL", fake.base_url)
            yield Voice(provider, fake)


AGENT_VOICES: dict[str, dict[str, Any]] = {
    # the agent as JSON would name it: a spec, and the agent's `voice`
    "elevenlabs": {"tts": "elevenlabs", "voice": "voice-1"},  # -> elevenlabs:voice-1
    "cartesia": {"tts": "cartesia:voice-2"},
    "openai": {"tts": "openai:gpt-4o-mini-tts", "voice": "coral"},
}


def phone_agent(provider: str) -> Agent:
    return Agent(
        name="shop",
        instructions="You are the shop's phone assistant.",
        greeting=GREETING,
        twilio={"transport": "media_streams"},
        **AGENT_VOICES[provider],
    )


async def dial(env: Env) -> ET.Element:
    """The voice webhook, with the CallSid the emulator's stream will carry."""
    response = await env.twilio.post("/twilio/voice", voice_params(CALLER))
    assert response.status_code == 200, response.text
    return ET.fromstring(response.text)


def caller_speaks(seconds: float) -> bytes:
    return mulaw_encode(np.full(round(seconds * 8000), 8000, dtype=np.int16))


def assert_untouched(heard: bytes, sent: bytes) -> None:
    """The phone played exactly `sent`, then at most one frame's silent padding."""
    assert heard[: len(sent)] == sent
    padding = heard[len(sent) :]
    assert len(padding) < 160 and set(padding) <= {0xFF}


async def bot_turns(env: Env) -> list[tuple[str, bool]]:
    await env.idle()
    turns = await env.store.load_turns(await env.conversation_id())
    return [
        (t["data"]["content"], bool(t["data"].get("interrupted")))
        for t in turns
        if t["kind"] == "bot_text"
    ]


@pytest.mark.parametrize("provider", ["elevenlabs", "cartesia", "openai"])
async def test_a_media_streams_call_spoken_by_a_hosted_voice_with_barge_in(
    provider: str, make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with hosted(provider, monkeypatch) as voice:
        script = [REPLY, AFTER]
        async with make_env(script, agents=[phone_agent(provider)]) as env:
            phone, greeting = await call_and_barge_in(env)
            turns = await bot_turns(env)
        check_greeting(voice, greeting)
        check_barge_in(voice, phone, voice.sentences())
        assert turns[0] == (GREETING, False)
        cut, interrupted = turns[1]
        assert interrupted and REPLY.startswith(cut) and 0 < len(cut) < len(REPLY)
        assert turns[2] == (AFTER, False)


async def call_and_barge_in(env: Env) -> tuple[MediaClient, bytes]:
    """Greeted, a key press asks for REPLY, the caller speaks over it, the agent answers."""
    async with media_call(env.twilio, await dial(env)) as phone:
        await eventually(lambda: bool(phone.events("media")))
        await phone.quiet()
        greeting = bytes(phone.heard)
        await phone.press("1")
        await eventually(lambda: len(phone.heard) - len(greeting) >= 0.6 * 8000)
        await phone.say(caller_speaks(0.8))
        await eventually(lambda: bool(phone.events("clear")))
        await eventually(lambda: len(env.llm.requests) == 2)
        cleared = phone.events("clear")[0].at
        await eventually(lambda: any(m.at > cleared for m in phone.events("media")))
        await phone.quiet()
        await phone.stop()
    return phone, greeting


def check_greeting(voice: Voice, heard: bytes) -> None:
    sent = voice.said(GREETING)
    if voice.provider == "openai":  # 24 kHz PCM, resampled once to the phone's 8 kHz
        assert len(heard) == pytest.approx(len(sent) / 2 / 3, abs=200)
        [request] = [r for r in voice.fake.requests if r.body["input"] == GREETING]
        assert request.body["voice"] == "coral" and request.body["response_format"] == "pcm"
    else:  # µ-law from the provider to the phone, byte for byte
        assert 0x7F in sent
        assert_untouched(heard, sent)


def check_barge_in(voice: Voice, phone: MediaClient, sentences: list[Any]) -> None:
    """The sentence in flight at the barge-in was stopped at the provider, and nothing after
    it was asked for; every sentence before it was finished."""
    reply = [s for s in sentences if s[0] in SENTENCES]
    assert reply and [s[0] for s in reply] == SENTENCES[: len(reply)]
    *finished, last = reply
    assert all(done and not stopped for _, _, done, stopped in finished)
    text, _, done, stopped = last
    assert stopped and not done, (text, done, stopped)
    if voice.provider == "cartesia":  # the cancel named that sentence's context
        [context] = [c for c in voice.fake.contexts.values() if c.transcript.strip() == text]
        assert voice.fake.cancels == [context.context_id]
    if voice.provider != "openai":  # what played before the clear is the providers' own bytes
        played = bytes(phone.heard[: phone.heard_at_clear])
        spoken = b"".join(audio for said, audio, _, _ in sentences if said != GREETING)
        start = len(voice.said(GREETING))
        start += 160 - start % 160 if start % 160 else 0  # the greeting's padded last frame
        assert played[start:] == spoken[: len(played) - start]


async def test_a_voice_that_drops_mid_greeting_is_finished_by_the_next_voice_of_the_chain(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`elevenlabs:…,cartesia:…`: ElevenLabs drops its socket midway through the greeting;
    Cartesia says the rest, and the phone hears both voices' µ-law untouched, back to back."""
    async with FakeElevenLabs(Behaviour(drop_after=8)) as eleven, FakeCartesia() as cartesia:
        for name, value in {
            "ELEVENLABS_API_KEY": API_KEY,
            "VOXLINE_ELEVENLABS_BASE_URL": eleven.base_url,
            "CARTESIA_API_KEY": API_KEY,
            "VOXLINE_CARTESIA_BASE_URL": cartesia.base_url,
        }.items():
            monkeypatch.setenv(name, value)
        agent = phone_agent("elevenlabs").spec.model_copy(
            update={"tts": "elevenlabs:voice-1,cartesia:voice-2", "voice": None}
        )
        with capture_logs() as logs:
            async with make_env(agents=[Agent(agent)]) as env:
                async with media_call(env.twilio, await dial(env)) as phone:
                    await eventually(lambda: bool(phone.events("media")))
                    await phone.quiet()
                    await phone.stop()
                turns = await bot_turns(env)
    [first] = [s for s in eleven.streams if s.query["output_format"] == "ulaw_8000"]
    [rest] = [c for c in cartesia.contexts.values() if c.transcript.strip() != "Hello."]
    assert not first.final and GREETING.endswith(rest.transcript.strip())
    assert_untouched(bytes(phone.heard), bytes(first.audio) + bytes(rest.audio))
    [fallover] = [e for e in logs if e["event"] == "tts_fallover"]
    assert fallover["mid_sentence"] and fallover["next_provider"] == "cartesia:voice-2"
    assert turns == [(GREETING, False)]
