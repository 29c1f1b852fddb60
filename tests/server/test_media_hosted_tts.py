"""Media Streams calls spoken by hosted voices, end to end against their loopback fakes.

The server is real (webhook, call token for the CallSid the stream uses, the media socket, the
voice pipeline, the speech pool that loads the agent's voice from its spec and the server's
settings, which hold the fake's key and base URL); the phone is the Media Streams emulator; the
voices are the fakes of tests/providers/tts_fakes.py, producing audio at about real time so a
sentence is still being synthesised when the caller speaks over it. The caller's ears are
stand-ins (loudness for voice activity, a fixed phrase for any loud audio): the point here is
the voice.

ElevenLabs and Cartesia are asked for 8 kHz µ-law and the phone receives the very bytes they
sent (nothing resampled or re-encoded); OpenAI's 24 kHz PCM is resampled once. A barge-in stops
the sentence in flight at the provider: ElevenLabs' socket is closed, Cartesia's context gets
its `cancel`, OpenAI's response is closed. (tests/server/test_media_hosted_pairs.py has the
hosted recognizers listening on the same calls.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from structlog.testing import capture_logs

from tests.providers.tts_fakes import API_KEY, Behaviour, FakeCartesia, FakeElevenLabs
from tests.server.conftest import Env, EnvFactory
from tests.server.hosted_calls import (
    GREETING,
    PACED,
    assert_untouched,
    barge_in_call,
    bot_turns,
    check_reply_spoken_over,
    dial,
    greeted,
    hosted_voice,
    loudness_ears,
    record_errors,
)
from tests.server.media_emulator import MediaClient, media_call
from voxline import Agent
from voxline.audio import mulaw_encode
from voxline.providers.stt.base import Transcript

REPLY = (
    "Our store opens at nine every weekday morning and it closes at six in the evening, "
    "while on Saturdays we open at ten in the morning and close at four in the afternoon, "
    "and on Sundays the store is closed all day long. "
    "The website takes orders at any hour."
)
AFTER = "Sure, what is your question?"


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
    """The agent's voice is loaded for real (from the server's settings); its ears are
    stand-ins."""
    loudness_ears(monkeypatch)
    monkeypatch.setattr("voxline.voice.providers.create_stt", lambda *a, **k: LoudSTT())


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


def caller_speaks(seconds: float) -> bytes:
    return mulaw_encode(np.full(round(seconds * 8000), 8000, dtype=np.int16))


@pytest.mark.parametrize("provider", ["elevenlabs", "cartesia", "openai"])
async def test_a_media_streams_call_spoken_by_a_hosted_voice_with_barge_in(
    provider: str, make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with hosted_voice(provider, PACED) as voice:
        script = [REPLY, AFTER]
        async with make_env(script, agents=[phone_agent(provider)], **voice.settings) as env:
            phone, greeting = await call_and_barge_in(env)
            turns = await bot_turns(env)
        check_reply_spoken_over(voice, phone, greeting, turns, reply=REPLY, after=AFTER)


async def call_and_barge_in(env: Env) -> tuple[MediaClient, bytes]:
    """Greeted, a key press asks for REPLY, the caller speaks over it, the agent answers."""
    return await barge_in_call(env, lambda phone: phone.press("1"), caller_speaks(0.8), after=0.6)


async def test_a_voice_that_drops_mid_greeting_is_reconnected_and_the_caller_hears_it_all(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`elevenlabs:voice-1` alone: its socket drops once midway through the greeting; the rest
    of the sentence is said on a new socket, the phone hears both sockets' µ-law untouched,
    back to back, and the gap is a log line and an `error` event."""
    async with hosted_voice("elevenlabs", Behaviour(drop_after=8, drop_times=1)) as voice:
        errors = record_errors(monkeypatch)
        with capture_logs() as logs:
            async with make_env(agents=[phone_agent("elevenlabs")], **voice.settings) as env:
                async with media_call(env.twilio, await dial(env)) as phone:
                    await greeted(phone)
                    await phone.stop()
                turns = await bot_turns(env)
    *whole, dropped, again = voice.fake.streams
    assert all(s.final for s in [*whole, again]) and not dropped.final
    assert GREETING.endswith(again.text.strip()) and len(again.text.strip()) < len(GREETING)
    spoken = b"".join(bytes(s.audio) for s in voice.fake.streams)
    assert_untouched(bytes(phone.heard), spoken)
    [reconnect] = [e for e in logs if e["event"] == "tts_reconnect"]
    assert reconnect["mid_sentence"] and reconnect["next_provider"] == "elevenlabs:voice-1"
    assert turns == [(GREETING, False)]
    [error] = errors
    assert error["where"] == "tts" and "elevenlabs:voice-1" in str(error["error"])


async def test_a_voice_that_drops_mid_greeting_is_finished_by_the_next_voice_of_the_chain(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`elevenlabs:…,cartesia:…`: ElevenLabs drops its socket midway through the greeting, and
    again on the new socket for the rest; Cartesia says what is left, and the phone hears both
    voices' µ-law untouched, back to back. Each gap is a log line and an `error` event."""
    async with FakeElevenLabs(Behaviour(drop_after=8)) as eleven, FakeCartesia() as cartesia:
        settings = {
            "elevenlabs_api_key": API_KEY,
            "elevenlabs_base_url": eleven.base_url,
            "cartesia_api_key": API_KEY,
            "cartesia_base_url": cartesia.base_url,
        }
        agent = phone_agent("elevenlabs").spec.model_copy(
            update={"tts": "elevenlabs:voice-1,cartesia:voice-2", "voice": None}
        )
        errors = record_errors(monkeypatch)
        with capture_logs() as logs:
            async with make_env(agents=[Agent(agent)], **settings) as env:
                async with media_call(env.twilio, await dial(env)) as phone:
                    await greeted(phone)
                    await phone.stop()
                turns = await bot_turns(env)
    # The speaker may hand the greeting over in pieces (its opening phrase first): the ones
    # before the drop were finished by ElevenLabs, the dropped one by ElevenLabs' second
    # socket and then Cartesia.
    *whole, dropped, again = [s for s in eleven.streams if s.query["output_format"] == "ulaw_8000"]
    [rest] = cartesia.contexts.values()
    assert all(s.final for s in whole) and not dropped.final and not again.final
    assert GREETING.endswith(again.text.strip()) and again.text.strip().endswith(
        rest.transcript.strip()
    )
    spoken = b"".join(bytes(s.audio) for s in [*whole, dropped, again]) + bytes(rest.audio)
    assert_untouched(bytes(phone.heard), spoken)
    moves = [e for e in logs if e["event"] in ("tts_reconnect", "tts_fallover")]
    assert [(e["event"], e["next_provider"], e["mid_sentence"]) for e in moves] == [
        ("tts_reconnect", "elevenlabs:voice-1", True),
        ("tts_fallover", "cartesia:voice-2", True),
    ]
    assert turns == [(GREETING, False)]
    assert [e["where"] for e in errors] == ["tts", "tts"]
    assert all("elevenlabs:voice-1" in str(e["error"]) for e in errors)
