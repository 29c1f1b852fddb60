"""ElevenLabs voices (`elevenlabs:VOICE_ID`, `elevenlabs:VOICE_ID#MODEL`) over the stream-input
WebSocket: `/v1/text-to-speech/{voice_id}/stream-input`.

A direct WebSocket (the `websockets` library, already a core dependency), not the `elevenlabs`
SDK: the SDK's stream-input client (`convert_realtime`) is synchronous (a blocking socket that
would stall the event loop every call shares), always connects over `wss` whatever the base
URL says (so `VOXLINE_ELEVENLABS_BASE_URL` could not point it at a plain loopback server), and
drops the character alignment. Its pydantic models of the messages are what the tests check our
fake server against.

One socket per sentence, as the endpoint is single-context: `{"text": " "}` opens the stream,
the sentence follows with `flush`, and `{"text": ""}` ends it; the server sends
`{"audio": base64, "alignment": {...}}` messages and then `{"isFinal": true}`. The speaker hands
over whole sentences and synthesises the next while this one plays, so only the first sentence
of a reply waits for the handshake. Stopping (barge-in) closes the socket, which is how this
endpoint is cancelled: generation stops and is not billed further.

Formats: `ulaw_8000` on the phone (8 kHz channels; decoded exactly, so Twilio gets ElevenLabs'
own bytes), otherwise the PCM rate that matches the channel (`pcm_16000`, `pcm_22050`,
`pcm_24000`, `pcm_44100`, ...), else `pcm_24000` resampled once per sentence.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from voxline.providers.tts.base import AudioChunk, OutputChannel, TTSError
from voxline.providers.tts.hosted import (
    PcmBytes,
    SocketVoice,
    Utterance,
    exact_mulaw_decode,
    open_socket,
)
from voxline.telemetry import counters

DEFAULT_BASE_URL = "wss://api.elevenlabs.io"
DEFAULT_MODEL = "eleven_flash_v2_5"  # ElevenLabs' lowest-latency model
NATIVE_RATE = 24000
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


@dataclass(frozen=True)
class _Format:
    name: str  # the `output_format` query value
    rate: int  # what the audio decodes to
    channel_rate: int  # what the chunks are resampled to (equal unless the channel is odd)

    @property
    def mulaw(self) -> bool:
        return self.name.startswith("ulaw_")


def output_format(channel: OutputChannel) -> _Format:
    """The format that needs no conversion on `channel`, or the native one resampled."""
    if channel.telephone:
        return _Format("ulaw_8000", 8000, 8000)
    if channel.sample_rate in PCM_RATES:
        return _Format(f"pcm_{channel.sample_rate}", channel.sample_rate, channel.sample_rate)
    return _Format(f"pcm_{NATIVE_RATE}", NATIVE_RATE, channel.sample_rate)


class ElevenLabsTTS(SocketVoice):
    """The `TTS` protocol over ElevenLabs' stream-input WebSocket (see the module doc)."""

    provider = "elevenlabs"
    default_base_url = DEFAULT_BASE_URL
    default_model = DEFAULT_MODEL
    _format = _Format(f"pcm_{NATIVE_RATE}", NATIVE_RATE, NATIVE_RATE)  # see for_channel
    sample_rate = _format.channel_rate

    def for_channel(self, channel: OutputChannel) -> ElevenLabsTTS:
        """This voice in the format that suits `channel` (same key, voice, model, timeouts)."""
        view = copy.copy(self)
        view._format = output_format(channel)
        view.sample_rate = view._format.channel_rate
        return view

    def url(self) -> str:
        query = urlencode(
            {"model_id": self.model, "output_format": self._format.name, "auto_mode": "true"}
        )
        voice = quote(self.voice_id, safe="")
        return f"{self._base}/v1/text-to-speech/{voice}/stream-input?{query}"

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        """Stream `text` in the voice named by the spec (`voice` is the agent's, already folded
        into the spec by the speech loader, so it is not used here)."""
        if not text.strip():
            return
        counters.provider_request("tts", self.label)
        fmt = self._format
        utterance = Utterance(text, source_rate=fmt.rate, output_rate=fmt.channel_rate)
        pcm = PcmBytes()
        ws = await self._open()
        try:
            await self._send(ws, {"text": " "}, {"text": text.strip() + " ", "flush": True})
            await self._send(ws, {"text": ""})
            spoken = 0
            while (message := await self._receive(ws)) is not None:
                if message.get("audio"):
                    raw = base64.b64decode(message["audio"])
                    spoken += _aligned_chars(message.get("alignment"))
                    if spoken:
                        utterance.spoken(spoken)
                    chunk = utterance.feed(exact_mulaw_decode(raw) if fmt.mulaw else pcm.feed(raw))
                    if chunk is not None:
                        yield chunk
                if message.get("isFinal"):
                    break
            # Closed before the last audio is handed over, so the stream ends the moment its
            # consumer takes that audio: a speaker deciding whether more speech follows must
            # not see a voice still busy closing a socket.
            await ws.close()
            last = utterance.finish()
            if last is not None:
                yield last
        except TTSError:
            tail = utterance.abandon()
            if tail is not None:
                yield tail
            raise
        finally:
            await ws.close()  # after isFinal a formality; mid-sentence, this is the cancel

    async def _open(self) -> ClientConnection:
        headers = {"xi-api-key": self._api_key}
        return await open_socket(
            self.url(), headers, label=self.label, open_timeout=self._open_timeout
        )

    async def _send(self, ws: ClientConnection, *messages: dict[str, Any]) -> None:
        try:
            for message in messages:
                await ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise self._error(f"the socket closed before the text was sent ({exc})") from exc

    async def _receive(self, ws: ClientConnection) -> dict[str, Any] | None:
        """The next message; None when the server closed the socket normally (1000), which the
        SDK also takes as the end of the audio."""
        try:
            async with asyncio.timeout(self._idle_timeout):
                raw = await ws.recv()
        except TimeoutError as exc:
            raise self._error(f"no audio for {self._idle_timeout:g} s") from exc
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            raise self._error(f"the socket closed mid-sentence ({code} {reason})".strip()) from exc
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise self._error("a message that is not a JSON object")
        if message.get("error") or (message.get("message") and not message.get("audio")):
            detail = message.get("message") or message.get("error")
            raise self._error(f"error from ElevenLabs: {detail}")
        return message


def _aligned_chars(alignment: Any) -> int:
    """How many characters of the text a message's audio speaks, from its `alignment`."""
    if isinstance(alignment, dict) and isinstance(alignment.get("chars"), list):
        return len(alignment["chars"])
    return 0
