"""Voice fallback chains (`"elevenlabs:VOICE,cartesia:VOICE"`) against the loopback fakes: a
voice that fails before speaking is replaced for the whole sentence, one that drops midway is
replaced for the rest of it, and every gap is a log line and an `error` event on the session."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.providers.tts_fakes import API_KEY, Behaviour, FakeCartesia, FakeElevenLabs
from tests.server.browser import LoudnessVAD, PhraseSTT
from tests.server.twilio_emulator import eventually
from voxline import Agent, Session
from voxline.audio.codecs import mulaw_encode
from voxline.audio.frames import AudioFrame
from voxline.providers.llm.fake import FakeLLM
from voxline.providers.tts.base import TTS, AudioChunk, OutputChannel, TTSError, for_channel
from voxline.providers.tts.cartesia import CartesiaTTS
from voxline.providers.tts.elevenlabs import ElevenLabsTTS
from voxline.providers.tts.fallback import FallbackTTS
from voxline.voice import VoicePipeline

TEXT = "Your table for two is booked at seven tonight, by the window."


@contextlib.asynccontextmanager
async def chain(
    first: Behaviour, second: Behaviour | None = None, *, reconnects: int = 0
) -> AsyncIterator[tuple[FallbackTTS, FakeElevenLabs, FakeCartesia]]:
    """ElevenLabs, then Cartesia, each on its fake (no reconnects unless asked: most tests
    here are about moving on to the next voice)."""
    async with FakeElevenLabs(first) as eleven, FakeCartesia(second) as cartesia:
        backup = CartesiaTTS("voice-2", api_key=API_KEY, base_url=cartesia.base_url)
        voices: list[TTS] = [
            ElevenLabsTTS("voice-1", api_key=API_KEY, base_url=eleven.base_url),
            backup,
        ]
        try:
            yield FallbackTTS(voices, reconnects=reconnects), eleven, cartesia
        finally:
            await backup.aclose()


async def spoken(tts: Any, text: str = TEXT) -> list[AudioChunk]:
    return [chunk async for chunk in tts.synthesize(text)]


def fallovers(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "tts_fallover"]


async def test_a_voice_refused_before_speaking_is_replaced_for_the_whole_sentence() -> None:
    failures: list[Exception] = []
    async with chain(Behaviour(refuse=503)) as (tts, eleven, cartesia):
        phone = for_channel(tts, OutputChannel(8000, on_failure=failures.append))
        with capture_logs() as logs:
            chunks = await spoken(phone)
    [context] = cartesia.contexts.values()
    assert context.transcript.strip() == TEXT
    assert "".join(c.text for c in chunks) == TEXT
    assert b"".join(mulaw_encode(c.pcm) for c in chunks) == bytes(context.audio)
    [entry] = fallovers(logs)
    assert entry["provider"] == "elevenlabs:voice-1" and entry["mid_sentence"] is False
    assert entry["next_provider"] == "cartesia:voice-2" and "503" in entry["reason"]
    assert [type(f) for f in failures] == [TTSError] and eleven.streams == []


async def test_a_voice_dropped_mid_sentence_hands_the_rest_of_it_to_the_next() -> None:
    failures: list[Exception] = []
    async with chain(Behaviour(drop_after=12)) as (tts, eleven, cartesia):
        phone = for_channel(tts, OutputChannel(8000, on_failure=failures.append))
        with capture_logs() as logs:
            chunks = await spoken(phone)
    [context] = cartesia.contexts.values()
    rest = context.transcript.strip()
    assert rest and rest != TEXT and TEXT.endswith(rest)  # only what was not said yet
    assert "".join(c.text for c in chunks) == TEXT  # no word lost or said twice
    heard = b"".join(mulaw_encode(c.pcm) for c in chunks)
    assert heard == bytes(eleven.streams[0].audio) + bytes(context.audio)
    [entry] = fallovers(logs)
    assert entry["mid_sentence"] is True and entry["remaining_chars"] >= len(rest)
    assert len(failures) == 1


async def test_a_voice_dropped_mid_sentence_is_reconnected_for_the_rest_then_replaced() -> None:
    """One reconnect per sentence: ElevenLabs drops, says more on a new socket, drops again;
    Cartesia says what is left. Each gap is a log line and a report to the call."""
    failures: list[Exception] = []
    async with chain(Behaviour(drop_after=10), reconnects=1) as (tts, eleven, cartesia):
        phone = for_channel(tts, OutputChannel(8000, on_failure=failures.append))
        with capture_logs() as logs:
            chunks = await spoken(phone)
    first, again = eleven.streams
    [context] = cartesia.contexts.values()
    rest = context.transcript.strip()
    assert not first.final and not again.final
    assert TEXT.endswith(again.text.strip()) and again.text.strip().endswith(rest)
    assert rest and len(rest) < len(again.text.strip()) < len(TEXT)
    assert "".join(c.text for c in chunks) == TEXT  # no word lost or said twice
    heard = b"".join(mulaw_encode(c.pcm) for c in chunks)
    assert heard == bytes(first.audio) + bytes(again.audio) + bytes(context.audio)
    moves = [e for e in logs if e["event"] in ("tts_reconnect", "tts_fallover")]
    assert [(e["event"], e["next_provider"]) for e in moves] == [
        ("tts_reconnect", "elevenlabs:voice-1"),
        ("tts_fallover", "cartesia:voice-2"),
    ]
    assert len(failures) == 2


async def test_a_voice_refused_outright_is_not_reconnected() -> None:
    async with chain(Behaviour(refuse=401), reconnects=1) as (tts, eleven, cartesia):
        with capture_logs() as logs:
            await spoken(tts)
    assert eleven.streams == [] and len(cartesia.contexts) == 1
    assert [e["event"] for e in logs if e["event"].startswith("tts_")] == ["tts_fallover"]


async def test_when_every_voice_fails_the_chain_raises_one_error_naming_them_all() -> None:
    failures: list[Exception] = []
    async with chain(Behaviour(error="quota exceeded"), Behaviour(refuse=401)) as (tts, _, _):
        phone = for_channel(tts, OutputChannel(8000, on_failure=failures.append))
        with pytest.raises(TTSError, match="every voice failed") as caught:
            await spoken(phone)
    assert "quota exceeded" in str(caught.value) and "401" in str(caught.value)
    assert len(failures) == 1  # the last failure is the speaker's to report, with the rest


async def test_each_sentence_tries_the_first_voice_again() -> None:
    behaviour = Behaviour(refuse=503)
    async with chain(behaviour) as (tts, eleven, cartesia):
        await spoken(tts, "First sentence.")
        behaviour.refuse = None
        await spoken(tts, "Second sentence.")
    assert [s.text.strip() for s in eleven.streams] == ["Second sentence."]
    assert [c.transcript.strip() for c in cartesia.contexts.values()] == ["First sentence."]


@dataclass
class Phone:
    """An 8 kHz transport that keeps the µ-law it would send to Twilio."""

    input_rate: int = 8000
    output_rate: int = 8000
    reports_playback: bool = False
    mulaw: bytearray = field(default_factory=bytearray)

    async def send(self, frame: AudioFrame) -> None:
        self.mulaw.extend(mulaw_encode(frame.pcm))

    def clear(self) -> None:
        return None


async def speak_on_a_call(tts: Any, text: str) -> tuple[Phone, list[dict[str, Any]]]:
    """`text` said by a voice pipeline's speaker on a phone; the session's `error` events."""
    session = Session(Agent(name="t"), llm=FakeLLM(), channel="voice", auto_deliver=False)
    errors: list[dict[str, Any]] = []
    session.on("error", lambda **event: errors.append(event))
    phone = Phone()
    vad, stt = LoudnessVAD(), PhraseSTT()
    pipeline = VoicePipeline(session, phone, stt=stt, tts=tts, vad=vad)
    try:
        await session.say(text)
        await eventually(lambda: len(phone.mulaw) > 0 and not pipeline.speaker.active)
    finally:
        await pipeline.close()
        await session.close()
    return phone, errors


async def test_on_a_call_the_fall_over_is_an_error_event_and_the_phone_hears_both_voices() -> None:
    async with chain(Behaviour(drop_after=12)) as (tts, eleven, cartesia):
        phone, errors = await speak_on_a_call(tts, TEXT)
    # The speaker may hand TEXT over in pieces (its opening phrase first); each piece starts
    # with ElevenLabs, and Cartesia says the rest of one that ElevenLabs dropped.
    rests = iter(cartesia.contexts.values())
    expected = b"".join(
        bytes(stream.audio) + (b"" if stream.final else bytes(next(rests).audio))
        for stream in eleven.streams
    )
    assert any(not stream.final for stream in eleven.streams)
    padding = bytes(phone.mulaw[len(expected) :])
    assert bytes(phone.mulaw[: len(expected)]) == expected  # µ-law untouched, both voices
    assert len(padding) < 160 and set(padding) <= {0xFF}  # the last frame filled with silence
    [error] = errors
    assert error["where"] == "tts" and isinstance(error["error"], TTSError)


async def test_on_a_call_a_single_voice_that_fails_is_an_error_event_too() -> None:
    async with FakeElevenLabs(Behaviour(error="voice_id not found")) as fake:
        tts = ElevenLabsTTS("voice-1", api_key=API_KEY, base_url=fake.base_url)
        session = Session(Agent(name="t"), llm=FakeLLM(), channel="voice", auto_deliver=False)
        errors: list[dict[str, Any]] = []
        session.on("error", lambda **event: errors.append(event))
        pipeline = VoicePipeline(session, Phone(), stt=PhraseSTT(), tts=tts, vad=LoudnessVAD())
        try:
            with capture_logs() as logs:
                await session.say("Hello.")
                await eventually(lambda: bool(errors))
        finally:
            await pipeline.close()
            await session.close()
    assert errors[0]["where"] == "tts" and "voice_id not found" in str(errors[0]["error"])
    assert any(entry["event"] == "speech synthesis failed" for entry in logs)


def test_the_chain_needs_a_voice_and_is_labelled_by_its_members() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FallbackTTS([])
    tts = ElevenLabsTTS("a", api_key="k")
    assert FallbackTTS([tts, tts]).label == "fallback(elevenlabs:a,elevenlabs:a)"
    assert FallbackTTS([tts]).sample_rate == tts.sample_rate
