"""voxline's Deepgram recognizer (through the official SDK) against the loopback fake:
interim and final words, provider end-of-turn signals, Finalize / ForceEndTurn, KeepAlive, the
CloseStream handshake. A refused key, a provider error and a dropped socket are in
test_stt_stream_failures.py (the same for each provider)."""

from __future__ import annotations

import asyncio

import pytest

from tests.providers.stt_fakes import FakeDeepgram, mulaw_tone, tone
from tests.providers.stt_streams import collect, send
from voxline.providers.stt.base import (
    LINEAR16_16K,
    MULAW_8K,
    StreamOptions,
    SttEventKind,
    SttStreamError,
)
from voxline.providers.stt.streaming import SocketStream

pytest.importorskip("deepgram", reason="needs deepgram-sdk (the deepgram or dev extra)")
from voxline.providers.stt.deepgram import DeepgramSTT, parse_flux

QUESTION = 5000
PHRASES = {QUESTION: "what time is it", 9000: "stop"}
K = SttEventKind


async def test_nova_streams_phone_audio_as_is_with_interim_final_and_end_of_turn() -> None:
    audio = mulaw_tone(QUESTION, 1.0) + mulaw_tone(0, 1.2)
    async with FakeDeepgram(PHRASES) as fake:
        stt = DeepgramSTT("nova-3", api_key="test-key", base_url=fake.url)
        stream = await stt.open_stream(StreamOptions(MULAW_8K, end_of_turn_silence=0.4))
        send(stream, audio)
        events = await collect(stream, until=K.END_OF_TURN)
        events += await collect(stream, until=K.END_OF_TURN)  # UtteranceEnd
        await stream.close()
        conn = fake.connections[0]
    kinds = [e.kind for e in events]
    assert kinds[0] is K.SPEECH_STARTED
    interims = [e.text for e in events if e.kind is K.INTERIM]
    assert interims[0] == "what" and interims[-1] == "what time is it"
    final = events[kinds.index(K.FINAL)]
    assert final.text == "what time is it" and final.end == pytest.approx(1.0, abs=0.05)
    assert kinds[kinds.index(K.FINAL) + 1] is K.END_OF_TURN  # speech_final
    assert kinds[-1] is K.END_OF_TURN  # UtteranceEnd
    assert bytes(conn.audio) == audio  # µ-law, untouched
    assert conn.query["model"] == "nova-3"
    assert conn.query["encoding"] == "mulaw" and conn.query["sample_rate"] == "8000"
    assert conn.query["endpointing"] == "400" and conn.query["interim_results"] == "true"
    assert conn.headers["Authorization"] == "Token test-key"
    assert [c["type"] for c in conn.controls] == ["CloseStream"]
    assert conn.sent[-1]["type"] == "Metadata"


async def test_finalize_flushes_the_words_heard_so_far() -> None:
    async with FakeDeepgram(PHRASES) as fake:
        stt = DeepgramSTT("nova-3", api_key="test-key", base_url=fake.url)
        stream = await stt.open_stream(StreamOptions(LINEAR16_16K))
        send(stream, tone(QUESTION, 0.5).tobytes(), 640)
        await collect(stream, until=K.INTERIM)
        stream.finalize()
        events = await collect(stream, until=K.FINALIZED)
        await stream.close()
        assert fake.connections[0].query["encoding"] == "linear16"
    final = next(e for e in events if e.kind is K.FINAL)
    assert final.text == "what time is it"


async def test_a_quiet_stream_sends_keepalives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SocketStream, "keepalive_every", 0.05)
    async with FakeDeepgram(PHRASES) as fake:
        stt = DeepgramSTT("nova-3", api_key="test-key", base_url=fake.url)
        stream = await stt.open_stream(StreamOptions(MULAW_8K))
        await asyncio.sleep(0.3)
        await stream.close()
        keepalives = fake.connections[0].of("KeepAlive")
    assert len(keepalives) >= 3


async def test_batch_transcription_is_one_short_stream() -> None:
    async with FakeDeepgram(PHRASES) as fake:
        stt = DeepgramSTT("nova-3", api_key="test-key", base_url=fake.url)
        heard = await stt.transcribe(tone(QUESTION, 0.8))
        nothing = await stt.transcribe(tone(0, 0.5))  # digital silence: never sent
        assert len(fake.connections) == 1
        assert [c["type"] for c in fake.connections[0].controls] == ["Finalize", "CloseStream"]
    assert heard.text == "what time is it"
    assert nothing.text == ""


async def test_flux_reports_whole_turns_and_ends_them_itself() -> None:
    audio = mulaw_tone(QUESTION, 1.0) + mulaw_tone(0, 0.8)
    async with FakeDeepgram(PHRASES) as fake:
        stt = DeepgramSTT("flux-general-en", api_key="test-key", base_url=fake.url)
        stream = await stt.open_stream(StreamOptions(MULAW_8K))
        send(stream, audio)
        events = await collect(stream, until=K.END_OF_TURN)
        send(stream, mulaw_tone(9000, 0.3))
        stream.finalize()  # ForceEndTurn
        forced = await collect(stream, until=K.FINALIZED)
        await stream.close()
        conn = fake.connections[0]
    assert conn.path == "/v2/listen" and conn.query["model"] == "flux-general-en"
    assert conn.query["encoding"] == "mulaw"
    assert events[0].kind is K.SPEECH_STARTED
    assert [e.text for e in events if e.kind is K.INTERIM][-1] == "what time is it"
    assert [(e.kind, e.text) for e in events[-2:]] == [
        (K.FINAL, "what time is it"),
        (K.END_OF_TURN, "what time is it"),
    ]
    assert [(e.kind, e.text) for e in forced if e.kind is not K.INTERIM][-3:] == [
        (K.FINAL, "stop"),
        (K.END_OF_TURN, "stop"),
        (K.FINALIZED, ""),
    ]
    assert [c["type"] for c in conn.controls] == ["ForceEndTurn", "CloseStream"]


def test_flux_eager_end_of_turn_and_resumption_are_events() -> None:
    v2 = pytest.importorskip("deepgram.listen.v2")
    base = {
        "type": "TurnInfo",
        "request_id": "r",
        "sequence_id": 3,
        "turn_index": 0,
        "audio_window_start": 0.0,
        "audio_window_end": 1.0,
        "transcript": "my number is",
        "words": [],
        "end_of_turn_confidence": 0.5,
    }
    eager = parse_flux(v2.ListenV2TurnInfo(**base, event="EagerEndOfTurn"), "deepgram:flux")
    resumed = parse_flux(v2.ListenV2TurnInfo(**base, event="TurnResumed"), "deepgram:flux")
    assert [e.kind for e in eager] == [K.INTERIM, K.EAGER_END_OF_TURN]
    assert [e.kind for e in resumed] == [K.INTERIM, K.TURN_RESUMED]
    with pytest.raises(SttStreamError, match="BAD_AUDIO"):
        parse_flux(
            v2.ListenV2FatalError(sequence_id=1, code="BAD_AUDIO", description="no"), "deepgram"
        )
