"""What the Media Streams tests of hosted speech providers share: dialing the server, a call
with a barge-in, reading back the stored turns, the voices' loopback fakes with the settings
that point a server at them, and the byte-for-byte check of µ-law from a provider to the phone.

A fake's key and base URL are handed to the server as `Settings` fields (`make_env(**settings)`),
not through the environment: that is what proves the server builds its providers from its own
settings object. `no_provider_environment` clears the variables that would outrank them.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.providers.tts_fakes import (
    API_KEY,
    Behaviour,
    FakeCartesia,
    FakeElevenLabs,
    FakeOpenAISpeech,
)
from tests.server.browser import LoudnessVAD
from tests.server.conftest import Env
from tests.server.media_emulator import FRAME, MediaClient, media_call
from tests.server.twilio_emulator import eventually, voice_params
from voxline.server.live_calls import LiveCalls

CALLER = "+14155550100"
GREETING = "Hello, this is the shop, how can I help you today?"
PACED = Behaviour(pace=0.04, chunk_seconds=0.05)
"""About real time for the voice fakes: 50 ms of audio every 40 ms, so the speaker's look-ahead
keeps a sentence open at the provider until its last words are about to play."""
PROVIDER_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ELEVENLABS_API_KEY",
    "CARTESIA_API_KEY",
    "DEEPGRAM_API_KEY",
    "ASSEMBLYAI_API_KEY",
    *(
        f"VOXLINE_{name}_{what}"
        for name in ("OPENAI", "ELEVENLABS", "CARTESIA", "DEEPGRAM", "ASSEMBLYAI")
        for what in ("API_KEY", "BASE_URL")
    ),
)


def no_provider_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment variables outrank `Settings(...)` arguments: none may be set."""
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def loudness_ears(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a server whose providers are the fakes: no provider variables in the environment,
    and voice activity by loudness (tones are not speech to Silero)."""
    no_provider_environment(monkeypatch)
    monkeypatch.setattr("voxline.voice.providers.create_vad", lambda *a, **k: LoudnessVAD())


def record_errors(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every `error` event of the calls the server hosts from now on, from their first moment
    (subscribed as each call is registered, before it greets the caller)."""
    errors: list[dict[str, Any]] = []
    add = LiveCalls.add

    def registered(
        calls: LiveCalls[Any], connection_id: str, conversation_id: str, call: Any
    ) -> None:
        add(calls, connection_id, conversation_id, call)
        call.session.on("error", lambda **event: errors.append(event))

    monkeypatch.setattr(LiveCalls, "add", registered)
    return errors


async def dial(env: Env) -> ET.Element:
    """The voice webhook, with the CallSid the emulator's stream will carry."""
    response = await env.twilio.post("/twilio/voice", voice_params(CALLER))
    assert response.status_code == 200, response.text
    return ET.fromstring(response.text)


async def greeted(phone: MediaClient) -> bytes:
    """Wait for the greeting to play out; what the phone heard of it."""
    await eventually(lambda: bool(phone.events("media")))
    await phone.quiet()
    return bytes(phone.heard)


async def barge_in_call(
    env: Env, ask: Callable[[MediaClient], Awaitable[None]], interrupt: bytes, *, after: float
) -> tuple[MediaClient, bytes]:
    """A call with a barge-in: greeted; `ask` asks for the long answer; once `after` seconds of
    it have played the caller says `interrupt` over it; Twilio is told to `clear`, the model is
    asked about the interruption and its answer plays. Returns the phone (everything it got)
    and what it heard of the greeting."""
    async with media_call(env.twilio, await dial(env)) as phone:
        greeting = await greeted(phone)
        await ask(phone)
        await eventually(lambda: len(phone.heard) - len(greeting) >= after * 8000)
        await phone.say(interrupt)
        await eventually(lambda: bool(phone.events("clear")))
        await eventually(lambda: len(env.llm.requests) == 2)
        cleared = phone.events("clear")[0].at
        await eventually(lambda: any(m.at > cleared for m in phone.events("media")))
        await phone.quiet()
        await phone.stop()
    return phone, greeting


async def stored_turns(env: Env) -> list[dict[str, Any]]:
    """The call's turns once every live session has ended and written them through."""
    await env.idle()
    return await env.store.load_turns(await env.conversation_id(f"phone:{CALLER}"))


async def user_turns(env: Env) -> list[str]:
    return [t["data"]["content"] for t in await stored_turns(env) if t["kind"] == "user_text"]


async def bot_turns(env: Env) -> list[tuple[str, bool]]:
    """(content, interrupted) of each bot turn."""
    return [
        (t["data"]["content"], bool(t["data"].get("interrupted")))
        for t in await stored_turns(env)
        if t["kind"] == "bot_text"
    ]


def assert_untouched(heard: bytes, sent: bytes) -> None:
    """The phone played exactly `sent`, then at most one frame's silent padding."""
    assert heard[: len(sent)] == sent
    padding = heard[len(sent) :]
    assert len(padding) < FRAME and set(padding) <= {0xFF}


def padded(audio: bytes) -> int:
    """Bytes the phone plays for `audio` spoken alone: its last frame is padded to 20 ms."""
    return len(audio) + (-len(audio) % FRAME)


@dataclass
class Voice:
    """A hosted voice's fake, the settings that point a server at it, and how to read what it
    did for each sentence."""

    provider: str
    fake: Any
    settings: dict[str, Any] = field(default_factory=dict)

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
        ]

    def said(self, text: str) -> bytes:
        """The audio of `text`, which the speaker may have handed over in several pieces (its
        chunker cuts a reply's opening phrase short, and long sentences at clauses)."""
        sentences = self.sentences()
        for first in range(len(sentences)):
            joined, audio = "", b""
            for said, piece, _, _ in sentences[first:]:
                joined, audio = f"{joined} {said}".strip(), audio + piece
                if joined == text:
                    return audio
                if not text.startswith(joined):
                    break
        raise AssertionError(f"{self.provider} never spoke {text!r}")

    def pieces_of(self, text: str) -> list[tuple[str, bytes, bool, bool]]:
        """The sentences asked for that are pieces of `text`, in order; they must be its
        leading pieces, nothing skipped."""
        pieces = [s for s in self.sentences() if s[0] and s[0] in text]
        assert pieces and text.startswith(" ".join(s[0] for s in pieces)), pieces
        return pieces


@contextlib.asynccontextmanager
async def hosted_voice(
    provider: str, behaviour: Behaviour | None = None, *, others: Any = None
) -> AsyncIterator[Voice]:
    """The provider's fake, running, with the settings (key, base URL) that point at it.
    `others`: an ASGI app answering OpenAI's other endpoints on the same base URL."""
    fake: Any
    if provider == "elevenlabs":
        async with FakeElevenLabs(behaviour) as fake:
            yield Voice(
                provider,
                fake,
                {"elevenlabs_api_key": API_KEY, "elevenlabs_base_url": fake.base_url},
            )
    elif provider == "cartesia":
        async with FakeCartesia(behaviour) as fake:
            yield Voice(
                provider, fake, {"cartesia_api_key": API_KEY, "cartesia_base_url": fake.base_url}
            )
    else:
        async with FakeOpenAISpeech(behaviour, others=others) as fake:
            yield Voice(
                provider, fake, {"openai_api_key": API_KEY, "openai_base_url": fake.base_url}
            )


def check_greeting(voice: Voice, text: str, heard: bytes, *, voice_name: str) -> None:
    """The greeting reached the phone: µ-law byte for byte from ElevenLabs and Cartesia, and
    OpenAI's 24 kHz PCM resampled once, in the agent's voice."""
    sent = voice.said(text)
    if voice.provider == "openai":
        assert len(heard) == pytest.approx(len(sent) / 2 / 3, abs=200)
        for request in voice.fake.requests:
            if request.body["input"] in text:
                assert request.body["voice"] == voice_name
                assert request.body["response_format"] == "pcm"
    else:
        assert 0x7F in sent  # the one byte a plain decode/encode round trip would change
        assert_untouched(heard, sent)


def check_barge_in(
    voice: Voice, phone: MediaClient, *, greeting: str, reply: str
) -> list[tuple[str, bytes, bool, bool]]:
    """The piece of `reply` in flight at the barge-in was stopped at the provider, nothing
    after it was asked for, and every piece before it was finished; for the µ-law voices,
    what played before Twilio's `clear` is the provider's own bytes. Returns the pieces of
    `reply` the voice was asked for (the stopped one last)."""
    asked = voice.pieces_of(reply)
    *finished, last = asked
    assert all(done and not stopped for _, _, done, stopped in finished)
    text, _, done, stopped = last
    assert stopped and not done, (text, done, stopped)
    if voice.provider == "cartesia":  # the cancel named that piece's context
        [context] = [c for c in voice.fake.contexts.values() if c.transcript.strip() == text]
        assert voice.fake.cancels == [context.context_id]
    if voice.provider != "openai":
        played = bytes(phone.heard[: phone.heard_at_clear])
        spoken = b"".join(audio for _, audio, _, _ in asked)
        start = padded(voice.said(greeting))  # the greeting's last frame is padded
        assert played[start:] == spoken[: len(played) - start]
    return asked


def check_reply_spoken_over(
    voice: Voice,
    phone: MediaClient,
    heard_greeting: bytes,
    bots: list[tuple[str, bool]],
    *,
    reply: str,
    after: str,
) -> tuple[list[tuple[str, bytes, bool, bool]], str]:
    """A `barge_in_call` as the voice and the store saw it: the greeting reached the phone
    (`check_greeting`), `reply` was stopped at the provider midway (`check_barge_in`), and the
    stored bot turns, (content, interrupted), are the greeting, the reply cut short and `after`.
    Returns the pieces of `reply` the voice was asked for, and what was kept of it."""
    check_greeting(voice, GREETING, heard_greeting, voice_name="coral")
    asked = check_barge_in(voice, phone, greeting=GREETING, reply=reply)
    assert bots[0] == (GREETING, False) and bots[2] == (after, False)
    cut, interrupted = bots[1]
    assert interrupted and reply.startswith(cut) and 0 < len(cut) < len(reply)
    return asked, cut
