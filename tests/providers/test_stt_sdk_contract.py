"""The loopback fakes speak what the official SDKs read: each SDK's own client connects to the
fake over a real socket and gets its typed messages back, and every message the fake sent
validates against the SDK's (pydantic) model of it. OpenAI's transcription fake is checked by
the SDK itself in test_stt_openai.py (the provider is the SDK's client).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.providers.stt_fakes import FakeAssemblyAI, FakeDeepgram, frames, mulaw_tone, tone

deepgram = pytest.importorskip("deepgram", reason="needs deepgram-sdk (the dev extra)")
v1 = pytest.importorskip("deepgram.listen.v1")
v2 = pytest.importorskip("deepgram.listen.v2")
QUESTION = 5000
PHRASES = {QUESTION: "what time is it"}


def client(url: str) -> Any:
    environment = deepgram.DeepgramClientEnvironment(
        base=url.replace("ws", "http"), production=url, agent=url, agent_rest=url
    )
    return deepgram.AsyncDeepgramClient(api_key="test-key", environment=environment)


async def test_deepgram_sdk_reads_the_fake_nova_stream() -> None:
    audio = mulaw_tone(QUESTION, 1.0) + mulaw_tone(0, 1.2)
    async with (
        FakeDeepgram(PHRASES) as fake,
        client(fake.url).listen.v1.connect(
            model="nova-3",
            encoding="mulaw",
            sample_rate="8000",
            interim_results="true",
            endpointing="300",
            utterance_end_ms="1000",
            vad_events="true",
        ) as socket,
    ):
        for frame in frames(audio, 160):
            await socket.send_media(frame)
        await socket.send_keep_alive()
        await socket.send_finalize()
        await socket.send_close_stream()
        received = [message async for message in socket]
    kinds = [type(message).__name__ for message in received]
    assert kinds[0] == "ListenV1SpeechStarted"
    assert {"ListenV1Results", "ListenV1UtteranceEnd"} <= set(kinds)
    assert kinds[-1] == "ListenV1Metadata"  # CloseStream's answer, then the server closes
    results = [m for m in received if isinstance(m, v1.ListenV1Results)]
    assert [r.channel.alternatives[0].transcript for r in results if not r.is_final]
    final = next(r for r in results if r.speech_final)
    assert final.is_final and final.channel.alternatives[0].transcript == "what time is it"
    assert any(r.from_finalize for r in results)
    conn = fake.connections[0]
    assert bytes(conn.audio) == audio
    assert [c["type"] for c in conn.controls] == ["KeepAlive", "Finalize", "CloseStream"]
    models = {
        "Results": v1.ListenV1Results,
        "SpeechStarted": v1.ListenV1SpeechStarted,
        "UtteranceEnd": v1.ListenV1UtteranceEnd,
        "Metadata": v1.ListenV1Metadata,
    }
    for message in conn.sent:  # strict validation, not the SDK's lenient construct
        models[message["type"]].model_validate(message)


async def test_deepgram_sdk_reads_the_fake_flux_stream() -> None:
    pcm = tone(QUESTION, 1.0).tobytes() + tone(0, 0.3).tobytes()
    async with (
        FakeDeepgram(PHRASES) as fake,
        client(fake.url).listen.v2.connect(
            model="flux-general-en", encoding="linear16", sample_rate="16000"
        ) as socket,
    ):
        for frame in frames(pcm, 640):
            await socket.send_media(frame)
        await socket.send_force_end_turn()
        received: list[Any] = []
        async with asyncio.timeout(5):
            async for message in socket:
                received.append(message)
                if getattr(message, "event", None) == "EndOfTurn":
                    break
        await socket.send_close_stream()
    assert isinstance(received[0], v2.ListenV2Connected)
    turns = [m for m in received if isinstance(m, v2.ListenV2TurnInfo)]
    assert turns[0].event == "StartOfTurn"
    assert "Update" in [t.event for t in turns]
    end = turns[-1]
    assert end.event == "EndOfTurn" and end.trigger == "manual"
    assert end.transcript == "what time is it"
    models = {"Connected": v2.ListenV2Connected, "TurnInfo": v2.ListenV2TurnInfo}
    for message in fake.connections[0].sent:
        models[message["type"]].model_validate(message)


async def test_deepgram_sdk_sees_a_refused_key() -> None:
    core = pytest.importorskip("deepgram.core.api_error")
    async with FakeDeepgram(PHRASES, api_key="another-key") as fake:
        with pytest.raises(core.ApiError) as refused:
            async with client(fake.url).listen.v1.connect(model="nova-3"):
                pass
    assert refused.value.status_code == 401


async def test_assemblyai_sdk_reads_the_fake_stream() -> None:
    v3 = pytest.importorskip("assemblyai.streaming.v3", reason="needs assemblyai (the dev extra)")
    async with FakeAssemblyAI(PHRASES) as fake:
        transcriber = v3.AsyncRealTimeTranscriber(
            v3.RealTimeTranscriberOptions(api_key="test-key", api_host=fake.url)
        )
        seen: list[Any] = []
        for event in (
            v3.RealTimeEvents.Begin,
            v3.RealTimeEvents.Turn,
            v3.RealTimeEvents.Termination,
        ):
            transcriber.on(event, lambda _client, message: seen.append(message))
        errors: list[Any] = []
        transcriber.on(v3.RealTimeEvents.Error, lambda _client, error: errors.append(error))
        await transcriber.connect(
            v3.RealTimeParameters(
                sample_rate=8000,
                encoding=v3.Encoding.pcm_mulaw,
                speech_model="universal-streaming-english",
            )
        )
        for chunk in frames(mulaw_tone(QUESTION, 1.0), 800):  # 100 ms messages
            await transcriber.stream(chunk)
        await transcriber.force_endpoint()
        await transcriber.keep_alive()
        await transcriber.disconnect(terminate=True)
    assert not errors, errors
    assert isinstance(seen[0], v3.BeginEvent)
    turns = [m for m in seen if isinstance(m, v3.TurnEvent)]
    assert any(not t.end_of_turn and t.words for t in turns)
    assert turns[-1].end_of_turn and turns[-1].transcript == "what time is it"
    assert isinstance(seen[-1], v3.TerminationEvent)
    conn = fake.connections[0]
    assert conn.query["encoding"] == "pcm_mulaw" and conn.query["sample_rate"] == "8000"
    assert [c["type"] for c in conn.controls] == ["ForceEndpoint", "KeepAlive", "Terminate"]


async def test_the_assemblyai_fake_refuses_short_chunks_as_the_service_does() -> None:
    v3 = pytest.importorskip("assemblyai.streaming.v3", reason="needs assemblyai (the dev extra)")
    async with FakeAssemblyAI(PHRASES) as fake:
        transcriber = v3.AsyncRealTimeTranscriber(
            v3.RealTimeTranscriberOptions(api_key="test-key", api_host=fake.url)
        )
        errors: list[Any] = []
        transcriber.on(v3.RealTimeEvents.Error, lambda _client, error: errors.append(error))
        await transcriber.connect(v3.RealTimeParameters(sample_rate=8000, encoding="pcm_mulaw"))
        await transcriber.stream(mulaw_tone(QUESTION, 0.02))  # one 20 ms phone frame
        async with asyncio.timeout(5):
            while not errors:  # noqa: ASYNC110 (the SDK reports through a callback)
                await asyncio.sleep(0.01)
        await transcriber.disconnect()
    assert errors[0].code == 3007
