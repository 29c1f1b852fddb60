"""The voice fakes speak the providers' protocols: the official SDKs talk to them.

ElevenLabs' SDK (`convert_realtime`, the stream-input client) is synchronous and always
connects over `wss`, so its fake runs with a throwaway certificate (made by the `openssl` tool)
that the SDK is told to trust through `SSL_CERT_FILE`, and the SDK runs on a thread. Cartesia's
async SDK connects to a `ws://` loopback URL as is. What voxline's providers send is compared
with what the SDKs send over the same fakes, and checked against the SDKs' message models.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.providers.tts_fakes import (
    API_KEY,
    Behaviour,
    FakeCartesia,
    FakeElevenLabs,
    audio_output,
)
from tests.server.twilio_emulator import eventually
from voxline.audio.codecs import mulaw_encode
from voxline.providers.tts.base import AudioChunk, OutputChannel, for_channel
from voxline.providers.tts.cartesia import CartesiaTTS
from voxline.providers.tts.elevenlabs import ElevenLabsTTS

TEXT = "Your table for two is booked at seven tonight."


def aliases(model: Any) -> set[str]:
    """The JSON names a pydantic model of an SDK knows."""
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context for 127.0.0.1 whose certificate clients in this process trust."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl tool to make a loopback certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def test_the_elevenlabs_sdk_streams_from_the_fake_as_from_the_service(
    tls: ssl.SSLContext,
) -> None:
    elevenlabs = pytest.importorskip("elevenlabs")
    from elevenlabs.types import (
        Alignment,
        AudioOutput,
        CloseConnection,
        FinalOutput,
        InitializeConnection,
        SendText,
    )

    async with FakeElevenLabs(tls=tls) as fake:
        client = elevenlabs.ElevenLabs(
            api_key=API_KEY, base_url=fake.base_url.replace("wss", "https")
        )

        def speak() -> bytes:
            audio = client.text_to_speech.convert_realtime(
                voice_id="voice-1",
                text=iter(["Your table for two ", "is booked at seven tonight."]),
                model_id="eleven_flash_v2_5",
                output_format="ulaw_8000",
            )
            return b"".join(audio)

        heard = await asyncio.to_thread(speak)
        [by_sdk] = fake.streams
        assert heard == bytes(by_sdk.audio) and len(heard) > 8000 * 0.5
        assert by_sdk.voice == "voice-1" and by_sdk.headers["xi-api-key"] == API_KEY
        assert by_sdk.query == {"model_id": "eleven_flash_v2_5", "output_format": "ulaw_8000"}

        # voxline's provider on the same fake: the SDK's message models know every field it sends
        tts = ElevenLabsTTS("voice-1", api_key=API_KEY, base_url=fake.base_url)
        phone = for_channel(tts, OutputChannel(8000))
        ours = [chunk async for chunk in phone.synthesize(TEXT)]
        mine = fake.streams[1]
        first, text, close = mine.messages
        assert first["text"] == " " and set(first) <= aliases(InitializeConnection)
        assert text["text"] == TEXT + " " and set(text) <= aliases(SendText)
        assert close == {"text": ""} and set(close) <= aliases(CloseConnection)
        assert set(mine.query) >= {"model_id", "output_format"}
        assert b"".join(mulaw_encode(chunk.pcm) for chunk in ours) == bytes(mine.audio)
        # and what the fake sends is what the SDK's receive models describe
        sent = audio_output(b"\xff" * 160, "Your ")
        assert set(sent) <= aliases(AudioOutput)
        assert set(sent["alignment"]) == aliases(Alignment)
        assert aliases(FinalOutput) == {"isFinal"}


async def test_the_cartesia_sdk_streams_and_cancels_contexts_on_the_fake() -> None:
    cartesia = pytest.importorskip("cartesia")
    from cartesia.types.websocket_client_event import CancelContextRequest

    fmt = {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}
    async with FakeCartesia(Behaviour(pace=0.02)) as fake:
        client = cartesia.AsyncCartesia(
            api_key=API_KEY,
            base_url=f"http://127.0.0.1:{fake.port}",
            websocket_base_url=fake.base_url,
        )
        connection = await client.tts.websocket_connect().enter()
        try:
            context = connection.context(
                model_id="sonic-3", voice={"id": "voice-1"}, output_format=fmt, add_timestamps=True
            )
            await context.push(TEXT + " ")
            await context.no_more_inputs()
            events = [event async for event in context.receive()]
            kinds = {event.type for event in events}
            assert kinds == {"chunk", "timestamps", "done"} and events[-1].type == "done"
            audio = b"".join(base64.b64decode(e.data) for e in events if e.type == "chunk")
            assert audio == bytes(fake.contexts[context._context_id].audio)
            words = [w for e in events if e.type == "timestamps" for w in e.word_timestamps.words]
            assert " ".join(words) == TEXT

            cut = connection.context(model_id="sonic-3", voice={"id": "voice-1"}, output_format=fmt)
            await cut.push(TEXT * 3)
            await cut.no_more_inputs()
            async for event in cut.receive():
                assert event.type == "chunk"
                break
            await cut.cancel()
            await eventually(lambda: fake.cancels == [cut._context_id])
        finally:
            await connection.close()
        sdk_request = fake.contexts[context._context_id].requests[0]
        sdk_headers = fake.connections[0]

        # voxline's provider sends what the SDK sends, and cancels as the SDK cancels
        tts = CartesiaTTS("voice-1", api_key=API_KEY, base_url=fake.base_url)
        phone = for_channel(tts, OutputChannel(8000))
        stream = phone.synthesize(TEXT * 3)
        await anext(stream)
        await stop(stream)
        await eventually(lambda: len(fake.cancels) == 2)
        await tts.aclose()
        [mine] = [c for c in fake.contexts.values() if c.context_id == fake.cancels[1]]
        assert set(mine.requests[0]) == set(sdk_request)
        assert mine.requests[0]["output_format"] == sdk_request["output_format"] == fmt
        assert mine.requests[-1]["continue"] is False and mine.requests[-1]["transcript"] == ""
        for name in ("Authorization", "Cartesia-Version"):
            assert fake.connections[1][name] == sdk_headers[name]
        cancel = CancelContextRequest(cancel=True, context_id=mine.context_id)
        assert set(cancel.model_dump()) == {"cancel", "context_id"}


async def stop(stream: AsyncIterator[AudioChunk]) -> None:
    """Close a voice's stream early, as the speaker does on barge-in."""
    await cast(AsyncGenerator[AudioChunk, None], stream).aclose()
