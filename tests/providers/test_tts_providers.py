"""The hosted voices against loopback fakes of their services: audio streamed in chunks that say
which words they speak, µ-law passed through on the phone byte for byte, a stop mid-sentence
cancelling the provider's work, and every failure a `TTSError` that names the voice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import numpy as np
import pytest

from tests.providers.tts_fakes import (
    API_KEY,
    Behaviour,
    FakeCartesia,
    FakeElevenLabs,
    FakeOpenAISpeech,
)
from tests.server.twilio_emulator import eventually
from voxline.audio.codecs import mulaw_decode, mulaw_encode
from voxline.providers.tts.base import TTS, AudioChunk, OutputChannel, TTSError, for_channel
from voxline.providers.tts.cartesia import CartesiaTTS
from voxline.providers.tts.elevenlabs import ElevenLabsTTS
from voxline.providers.tts.hosted import exact_mulaw_decode
from voxline.providers.tts.openai_speech import OpenAISpeechTTS

TEXT = "Your table for two is booked at seven tonight, by the window."
PHONE = OutputChannel(8000)
Fake = FakeElevenLabs | FakeCartesia | FakeOpenAISpeech


@contextlib.asynccontextmanager
async def voice(
    provider: str, behaviour: Behaviour | None = None, **options: Any
) -> AsyncIterator[tuple[TTS, Any]]:
    """A provider of kind `provider` talking to its fake."""
    tts: Any
    if provider == "elevenlabs":
        async with FakeElevenLabs(behaviour) as fake:
            yield ElevenLabsTTS("voice-1", api_key=API_KEY, base_url=fake.base_url, **options), fake
    elif provider == "cartesia":
        async with FakeCartesia(behaviour) as fake:
            tts = CartesiaTTS("voice-1", api_key=API_KEY, base_url=fake.base_url, **options)
            try:
                yield tts, fake
            finally:
                await tts.aclose()
    else:
        async with FakeOpenAISpeech(behaviour) as fake:
            tts = OpenAISpeechTTS(api_key=API_KEY, base_url=fake.base_url, **options)
            try:
                yield tts, fake
            finally:
                await tts.aclose()


def sent_audio(provider: str, fake: Any) -> bytes:
    """Everything the fake sent, in order."""
    if provider == "elevenlabs":
        return b"".join(bytes(s.audio) for s in fake.streams)
    if provider == "cartesia":
        return b"".join(bytes(c.audio) for c in fake.contexts.values())
    return b"".join(bytes(r.audio) for r in fake.requests)


async def spoken(tts: TTS, text: str = TEXT, voice: str | None = None) -> list[AudioChunk]:
    return [chunk async for chunk in tts.synthesize(text, voice=voice)]


def test_exact_mulaw_decoding_gives_the_channel_encoder_every_byte_back() -> None:
    codes = bytes(range(256))
    assert mulaw_encode(exact_mulaw_decode(codes)) == codes
    assert mulaw_encode(mulaw_decode(codes)) != codes  # the standard table loses 0x7F
    assert np.abs(exact_mulaw_decode(codes).astype(int) - mulaw_decode(codes)).max() == 1


@pytest.mark.parametrize("provider", ["elevenlabs", "cartesia", "openai"])
async def test_audio_streams_in_chunks_that_say_which_words_they_speak(provider: str) -> None:
    async with voice(provider, Behaviour(pace=0.01)) as (tts, fake):
        chunks = await spoken(tts)
        assert len(chunks) > 10
        assert all(chunk.exact and chunk.sample_rate == tts.sample_rate for chunk in chunks)
        assert "".join(chunk.text for chunk in chunks) == TEXT  # every word, once, in order
        credited = [chunk.text for chunk in chunks if chunk.text]
        assert len(credited) > 3  # spread over the sentence, not all on one chunk
        assert credited[-1].endswith("window.")
        pcm = np.concatenate([chunk.pcm for chunk in chunks])
        assert pcm.astype("<i2").tobytes() == sent_audio(provider, fake)


@pytest.mark.parametrize("provider", ["elevenlabs", "cartesia"])
async def test_on_the_phone_mulaw_comes_through_byte_for_byte(provider: str) -> None:
    async with voice(provider) as (tts, fake):
        phone = for_channel(tts, PHONE)
        chunks = await spoken(phone)
        sent = sent_audio(provider, fake)
        assert 0x7F in sent and len(sent) == pytest.approx(len(TEXT) * 0.02 * 8000, rel=0.01)
        assert all(chunk.sample_rate == 8000 for chunk in chunks)
        assert b"".join(mulaw_encode(chunk.pcm) for chunk in chunks) == sent
    if provider == "elevenlabs":
        assert fake.streams[0].query["output_format"] == "ulaw_8000"
    else:
        [context] = fake.contexts.values()
        fmt = {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}
        assert context.requests[0]["output_format"] == fmt


@pytest.mark.parametrize(
    ("rate", "asked", "resampled"),
    [(16000, "pcm_16000", False), (48000, "pcm_48000", False), (11025, "pcm_24000", True)],
)
async def test_elevenlabs_asks_for_the_channel_rate_and_resamples_only_what_it_cannot_ask(
    rate: int, asked: str, resampled: bool
) -> None:
    async with voice("elevenlabs") as (tts, fake):
        chunks = await spoken(for_channel(tts, OutputChannel(rate)))
    assert fake.streams[0].query["output_format"] == asked
    samples = sum(len(chunk.pcm) for chunk in chunks)
    assert samples == pytest.approx(len(TEXT) * 0.02 * rate, rel=0.02)
    assert all(chunk.sample_rate == rate for chunk in chunks)
    if not resampled:
        assert np.concatenate([c.pcm for c in chunks]).astype("<i2").tobytes() == bytes(
            fake.streams[0].audio
        )


async def test_openai_speaks_the_agents_voice_and_is_resampled_once_for_the_phone() -> None:
    async with voice("openai") as (tts, fake):
        chunks = await spoken(for_channel(tts, PHONE), voice="coral")
        default = await spoken(tts)
    body = fake.requests[0].body
    assert body == {"model": "gpt-4o-mini-tts", "input": TEXT, "voice": "coral"} | {
        "response_format": "pcm"
    }
    assert fake.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert fake.requests[1].body["voice"] == "alloy"
    samples = sum(len(chunk.pcm) for chunk in chunks)
    assert samples == pytest.approx(len(TEXT) * 0.02 * 8000, rel=0.02)  # 24 kHz, resampled
    assert {chunk.sample_rate for chunk in chunks} == {8000}
    assert {chunk.sample_rate for chunk in default} == {24000}


async def test_a_cartesia_sentence_stopped_midway_cancels_its_context() -> None:
    async with voice("cartesia", Behaviour(pace=0.02)) as (tts, fake):
        phone = for_channel(tts, PHONE)
        finished = await spoken(phone, "Hello there.")
        stream = phone.synthesize(TEXT)
        await anext(stream)
        await stop(stream)  # what the speaker does on barge-in
        await eventually(lambda: len(fake.cancels) == 1)
        [first, second] = fake.contexts.values()
        assert fake.cancels == [second.context_id]
        assert second.transcript.strip() == TEXT and not second.done
        assert first.done and not first.cancelled and finished
        # the shared socket goes on: the next sentence is another context on it
        await spoken(phone, "Anything else?")
        assert len(fake.connections) == 1 and len(fake.contexts) == 3


async def test_an_elevenlabs_or_openai_sentence_stopped_midway_closes_its_stream() -> None:
    async with voice("elevenlabs", Behaviour(pace=0.02)) as (tts, fake):
        stream = tts.synthesize(TEXT)
        await anext(stream)
        await stop(stream)
        await eventually(lambda: fake.streams[0].closed_early)
        assert not fake.streams[0].final
    async with voice("openai", Behaviour(pace=0.02)) as (tts, fake):
        stream = tts.synthesize(TEXT)
        await anext(stream)
        await stop(stream)
        await eventually(lambda: bool(fake.requests))
        assert not fake.requests[0].complete


@pytest.mark.parametrize("provider", ["elevenlabs", "cartesia", "openai"])
async def test_a_wrong_key_is_a_tts_error_naming_the_voice(provider: str) -> None:
    async with voice(provider) as (tts, _):
        tts.__dict__.update(_wrong_key(provider, tts))
        with pytest.raises(TTSError, match="401") as caught:
            await spoken(tts)
    assert caught.value.provider == tts.label and tts.label in str(caught.value)


def _wrong_key(provider: str, tts: Any) -> dict[str, Any]:
    if provider == "elevenlabs":
        return {"_api_key": "wrong"}
    if provider == "cartesia":
        tts._connection.headers = tts._connection.headers | {"Authorization": "Bearer wrong"}
        return {}
    tts._client.api_key = "wrong"
    return {}


@pytest.mark.parametrize("provider", ["elevenlabs", "cartesia", "openai"])
async def test_the_services_own_error_is_a_tts_error_with_its_message(provider: str) -> None:
    async with voice(provider, Behaviour(error="voice_id not found")) as (tts, _):
        with pytest.raises(TTSError, match="voice_id not found"):
            await spoken(tts)


@pytest.mark.parametrize("provider", ["elevenlabs", "cartesia", "openai"])
async def test_a_socket_dropped_mid_sentence_fails_after_the_audio_it_gave(provider: str) -> None:
    async with voice(provider, Behaviour(drop_after=4)) as (tts, _):
        chunks: list[AudioChunk] = []
        with pytest.raises(TTSError) as caught:
            async for chunk in tts.synthesize(TEXT):
                chunks.append(chunk)
        assert chunks and "".join(c.text for c in chunks) != TEXT
        assert tts.label in str(caught.value)


@pytest.mark.parametrize("provider", ["elevenlabs", "cartesia", "openai"])
async def test_a_voice_that_goes_quiet_fails_after_the_idle_timeout(provider: str) -> None:
    async with voice(provider, Behaviour(silent=True), idle_timeout=0.3) as (tts, fake):
        with pytest.raises(TTSError, match=r"no audio|timed out|broke off"):
            await spoken(tts)
        if provider == "cartesia":  # its context is cancelled, the shared socket kept
            await eventually(lambda: len(fake.cancels) == 1)


async def test_a_dropped_cartesia_socket_fails_every_context_then_the_next_one_reconnects() -> None:
    behaviour = Behaviour(pace=0.02, drop_after=5)
    async with voice("cartesia", behaviour) as (tts, fake):
        first, second = tts.synthesize(TEXT), tts.synthesize("And another sentence here.")
        results = await asyncio.gather(_drain(first), _drain(second))
        assert all(isinstance(result, TTSError) for result in results)
        behaviour.drop_after = None
        assert "".join(c.text for c in await spoken(tts, "Back again.")) == "Back again."
        assert len(fake.connections) == 2


async def _drain(stream: AsyncIterator[AudioChunk]) -> Exception | None:
    try:
        async for _ in stream:
            pass
    except Exception as exc:
        return exc
    return None


async def test_nothing_to_say_sends_nothing() -> None:
    async with voice("elevenlabs") as (tts, fake):
        assert await spoken(tts, "   ") == []
        assert fake.streams == []


async def stop(stream: AsyncIterator[AudioChunk]) -> None:
    """Close a voice's stream early, as the speaker does on barge-in."""
    await cast(AsyncGenerator[AudioChunk, None], stream).aclose()
