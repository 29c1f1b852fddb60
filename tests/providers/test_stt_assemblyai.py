"""voxline's AssemblyAI recognizer (a direct WebSocket) against the loopback fake of the v3
streaming protocol: turns with interim and final words, its end of turn, ForceEndpoint, the
Terminate handshake, 50 ms audio messages from 20 ms phone frames. A refused key, a provider
error and a dropped socket are in test_stt_stream_failures.py (the same for each provider)."""

from __future__ import annotations

import json

from tests.providers.stt_fakes import FakeAssemblyAI, mulaw_tone, tone
from tests.providers.stt_streams import collect, send
from voxline.providers.stt.assemblyai import AssemblyAISTT
from voxline.providers.stt.base import MULAW_8K, StreamOptions, SttEventKind

QUESTION = 5000
PHRASES = {QUESTION: "my number is four one five", 9000: "yes"}
K = SttEventKind


async def test_phone_frames_go_as_mulaw_in_50_ms_messages_and_turns_end() -> None:
    audio = mulaw_tone(QUESTION, 1.2) + mulaw_tone(0, 0.6)
    async with FakeAssemblyAI(PHRASES) as fake:
        stt = AssemblyAISTT("universal-streaming", api_key="test-key", base_url=fake.url)
        stream = await stt.open_stream(StreamOptions(MULAW_8K, hints=("Voxline",)))
        send(stream, audio)
        events = await collect(stream, until=K.END_OF_TURN)
        await stream.close()
        conn = fake.connections[0]
    assert conn.query["encoding"] == "pcm_mulaw" and conn.query["sample_rate"] == "8000"
    assert conn.query["speech_model"] == "universal-streaming-english"
    assert conn.query["format_turns"] == "false"
    assert json.loads(conn.query["keyterms_prompt"]) == ["Voxline"]
    assert conn.headers["Authorization"] == "test-key"
    assert bytes(conn.audio) == audio  # µ-law untouched, only regrouped
    assert set(conn.chunks) == {480}  # 60 ms: three 20 ms frames reach the 50 ms minimum
    assert events[0].kind is K.SPEECH_STARTED
    interims = [e.text for e in events if e.kind is K.INTERIM]
    assert interims[0] == "my" and interims[-1].startswith("my number is four")
    assert [(e.kind, e.text) for e in events[-2:]] == [
        (K.FINAL, "my number is four one five"),
        (K.END_OF_TURN, "my number is four one five"),
    ]
    assert [c["type"] for c in conn.controls] == ["Terminate"]
    assert conn.sent[-1]["type"] == "Termination"


async def test_force_endpoint_ends_the_turn_and_the_remainder_is_padded() -> None:
    async with FakeAssemblyAI(PHRASES) as fake:
        stt = AssemblyAISTT("universal-streaming", api_key="test-key", base_url=fake.url)
        stream = await stt.open_stream(StreamOptions(MULAW_8K, end_of_turn_silence=0.7))
        send(stream, mulaw_tone(9000, 0.5) + mulaw_tone(0, 0.02))  # 520 ms: 40 ms left over
        stream.finalize()
        events = await collect(stream, until=K.END_OF_TURN)
        await stream.close()
        conn = fake.connections[0]
    assert conn.query["min_turn_silence"] == "700"
    assert conn.chunks[-1] == 400  # the 40 ms rest, padded with silence to 50 ms
    assert [c["type"] for c in conn.controls] == ["ForceEndpoint", "Terminate"]
    assert events[-1].text == "yes"


async def test_a_second_turn_starts_with_speech_started() -> None:
    audio = mulaw_tone(9000, 0.4) + mulaw_tone(0, 0.5) + mulaw_tone(QUESTION, 1.0)
    async with FakeAssemblyAI(PHRASES) as fake:
        stt = AssemblyAISTT("universal-streaming", api_key="test-key", base_url=fake.url)
        stream = await stt.open_stream(StreamOptions(MULAW_8K))
        send(stream, audio + mulaw_tone(0, 0.5))
        first = await collect(stream, until=K.END_OF_TURN)
        second = await collect(stream, until=K.END_OF_TURN)
        await stream.close()
    assert first[-1].text == "yes"
    assert second[0].kind is K.SPEECH_STARTED
    assert second[-1].text == "my number is four one five"


async def test_batch_transcription_is_one_short_stream() -> None:
    async with FakeAssemblyAI(PHRASES) as fake:
        stt = AssemblyAISTT("universal-streaming", api_key="test-key", base_url=fake.url)
        heard = await stt.transcribe(tone(9000, 0.6))
        assert fake.connections[0].query["encoding"] == "pcm_s16le"
    assert heard.text == "yes"
