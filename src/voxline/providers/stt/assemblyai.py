"""AssemblyAI Universal-Streaming (v3): `assemblyai:universal-streaming` (English) and
`assemblyai:universal-streaming-multilingual`.

**Client: a direct WebSocket** (`websockets`, already a core dependency; the `assemblyai`
extra adds nothing else). The official `assemblyai` SDK has an asyncio client, but it is built
around registered callbacks that it calls inline and whose exceptions it swallows, an unbounded
write queue, its own connect retries with sleeps, and a single-use object per session; a call
here needs the opposite on each point (events pulled in order, a bounded queue, one owner for
reconnects and fallback). The protocol is small, so speaking it directly is shorter than
adapting the SDK. Its message models are what the tests check the loopback fake against.

The protocol (`/v3/ws`): query `sample_rate`, `encoding` (`pcm_s16le`, or `pcm_mulaw` for a
phone call's µ-law, sent as is), `speech_model`, `format_turns`; the key in `Authorization`.
The server says `Begin`, then `Turn` messages: each carries the turn so far (`words`, final or
not; `transcript`, its final words) and `end_of_turn` when AssemblyAI's turn detection (or our
`ForceEndpoint`) ends it. Audio must come in 50-1000 ms messages, so 20 ms phone frames are
coalesced to 50 ms. `Terminate` closes: the last `Turn`s, `Termination`, then the close.
`format_turns` stays off: the formatted copy of a turn arrives after the turn has ended, and a
voice agent should not wait for it (AssemblyAI's own advice for voice agents).

`VOXLINE_ASSEMBLYAI_BASE_URL` points it elsewhere (`wss://streaming.eu.assemblyai.com`, a
loopback fake).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus

from voxline.providers.llm.base import ConfigurationError
from voxline.providers.stt.base import StreamOptions, SttEvent, SttEventKind, SttStreamError
from voxline.providers.stt.streaming import Control, SocketStream, SocketSTT, refused
from voxline.settings import Settings

DEFAULT_BASE_URL = "wss://streaming.assemblyai.com"
KEY_HINT = "set VOXLINE_ASSEMBLYAI_API_KEY (or ASSEMBLYAI_API_KEY)"
MODELS = {
    "universal-streaming": "universal-streaming-english",
    "universal-streaming-english": "universal-streaming-english",
    "universal-streaming-multilingual": "universal-streaming-multilingual",
}
MIN_CHUNK = 0.05  # seconds: AssemblyAI refuses audio messages under 50 ms
OPEN_TIMEOUT = 5.0
_ENCODINGS = {"linear16": "pcm_s16le", "mulaw": "pcm_mulaw"}
_REFUSED_CLOSE = {1008, 4001, 4002, 4003}  # not authorized, no funds, paid only


class AssemblyAISTT(SocketSTT):
    """A `StreamingSTT` on Universal-Streaming; its `transcribe` uses a short stream."""

    provider = "assemblyai"
    default_base_url = DEFAULT_BASE_URL

    def __init__(self, model: str, *, api_key: str, base_url: str | None = None) -> None:
        super().__init__(model, api_key=api_key, base_url=base_url)
        self.model = MODELS[model]  # the label keeps the name the spec used

    def url(self, options: StreamOptions) -> str:
        query: dict[str, Any] = {
            "sample_rate": options.format.sample_rate,
            "encoding": _ENCODINGS[options.format.encoding],
            "speech_model": self.model,
            "format_turns": "false",
        }
        if options.hints:
            query["keyterms_prompt"] = json.dumps(list(options.hints))
        if options.end_of_turn_silence is not None:
            query["min_turn_silence"] = round(options.end_of_turn_silence * 1000)
        return f"{self.base_url}/v3/ws?{urlencode(query)}"

    def _stream(self, options: StreamOptions) -> SocketStream:
        return AssemblyAIStream(self, options)


class AssemblyAIStream(SocketStream):
    def __init__(self, stt: AssemblyAISTT, options: StreamOptions) -> None:
        super().__init__(options.format, provider=stt.label, min_chunk=MIN_CHUNK)
        self.stt = stt
        self.options = options
        self._ws: ClientConnection | None = None
        self._turn = -1  # the turn_order of the turn in progress
        self._ended = -1  # the last turn_order that ended

    async def _connect(self) -> None:
        headers = {"Authorization": self.stt.api_key}
        try:
            self._ws = await connect(
                self.stt.url(self.options),
                additional_headers=headers,
                open_timeout=OPEN_TIMEOUT,
                max_size=2**20,
            )
        except InvalidStatus as exc:
            raise refused(self.provider, exc.response.status_code) from exc

    async def _send_audio(self, audio: bytes) -> None:
        assert self._ws is not None
        await self._ws.send(audio)

    async def _send_control(self, kind: Control) -> None:
        assert self._ws is not None
        name = {"finalize": "ForceEndpoint", "keepalive": "KeepAlive", "close": "Terminate"}[kind]
        await self._ws.send(json.dumps({"type": name}))

    async def _messages(self) -> AsyncIterator[object]:
        assert self._ws is not None
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    yield json.loads(message)
        except ConnectionClosedOK:
            return
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            reason = exc.rcvd.reason if exc.rcvd is not None else "no close frame"
            raise SttStreamError(
                f"{self.provider}: the stream closed: {code} {reason}".strip(),
                provider=self.provider,
                retryable=code not in _REFUSED_CLOSE,
            ) from exc

    def _parse(self, message: object) -> Iterable[SttEvent]:
        if not isinstance(message, dict):
            return []
        kind = message.get("type")
        if kind == "Turn":
            return self._turn_events(message)
        if kind == "SpeechStarted":
            at = float(message.get("timestamp", 0)) / 1000
            return [SttEvent(SttEventKind.SPEECH_STARTED, "", at, at)]
        if kind == "Error" or (kind is None and "error" in message):
            raise SttStreamError(
                f"{self.provider}: {message.get('error') or message}", provider=self.provider
            )
        return []  # Begin, Termination (the close follows), Warning, Heartbeat

    def _turn_events(self, message: dict[str, Any]) -> list[SttEvent]:
        order = int(message.get("turn_order", 0))
        words = [w for w in message.get("words") or [] if isinstance(w, dict)]
        start = float(words[0].get("start", 0)) / 1000 if words else 0.0
        end = float(words[-1].get("end", 0)) / 1000 if words else start
        events: list[SttEvent] = []
        if order <= self._ended:
            return events  # a late (formatted) copy of a turn already ended
        if order != self._turn:
            self._turn = order
            events.append(SttEvent(SttEventKind.SPEECH_STARTED, "", start, start))
        if message.get("end_of_turn"):
            self._ended = order
            text = str(message.get("transcript") or "").strip()
            events.append(SttEvent(SttEventKind.FINAL, text, start, end))
            events.append(SttEvent(SttEventKind.END_OF_TURN, text, start, end))
        else:
            text = " ".join(str(w.get("text", "")).strip() for w in words).strip()
            events.append(SttEvent(SttEventKind.INTERIM, text, start, end))
        return events

    async def _disconnect(self) -> None:
        if self._ws is not None:
            await self._ws.close()


def create_assemblyai_stt(model: str | None, settings: Settings) -> AssemblyAISTT:
    """`assemblyai:universal-streaming` with the key and base URL from `settings`."""
    model = model or "universal-streaming"
    if model not in MODELS:
        raise ConfigurationError(
            f"unknown AssemblyAI streaming model {model!r}: use one of {', '.join(MODELS)}"
        )
    key = settings.assemblyai_api_key
    if key is None:
        raise ConfigurationError(f"assemblyai:{model} needs an API key: {KEY_HINT}")
    return AssemblyAISTT(
        model, api_key=key.get_secret_value(), base_url=settings.assemblyai_base_url
    )
