"""Cartesia voices (`cartesia:VOICE_ID`, `cartesia:VOICE_ID#MODEL`) over the TTS WebSocket
(`/tts/websocket`) with contexts.

A direct WebSocket (the `websockets` library), not the `cartesia` SDK's
`tts.websocket_connect()`: the SDK's connection reads in a background task that, when the socket
drops, only logs a warning, so a context waiting for audio waits until its own timeout instead
of failing at once (a fallback chain would leave the caller in silence meanwhile); and after a
reconnect it forgets its contexts without telling them. The wire messages are the same ones the
SDK sends, with the same headers (`Authorization: Bearer`, `Cartesia-Version`); the tests drive
the SDK against our fake server to check that.

One socket per provider, opened on first use and shared by every call of the process: each
sentence is a context of its own on it (a fresh `context_id`). The sentence goes in with
`"continue": true` and the context is closed with an empty transcript and `"continue": false`,
which is Cartesia's documented way to stream text into a context; the server answers with
`chunk` messages (base64 audio), `timestamps` (word timings: they tell which words each chunk
speaks) and `done`, or `error`. A barge-in closes the sentence's stream before `done`, and that
sends `{"context_id": ..., "cancel": true}`, so Cartesia stops generating for it at once. A
dropped socket fails every context in flight with `TTSError` at once; the next sentence opens a
new socket.

Formats: 8 kHz `pcm_mulaw` on the phone (decoded exactly: Twilio gets Cartesia's own bytes),
otherwise `pcm_s16le` at the channel's rate when Cartesia offers it, else 24 kHz resampled once
per sentence.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from voxline.providers.tts.base import AudioChunk, OutputChannel, TTSError
from voxline.providers.tts.hosted import (
    PcmBytes,
    SocketVoice,
    Utterance,
    exact_mulaw_decode,
    failure,
    open_socket,
)
from voxline.telemetry import counters

DEFAULT_BASE_URL = "wss://api.cartesia.ai"
DEFAULT_MODEL = "sonic-3"
API_VERSION = "2026-08-14"  # the `Cartesia-Version` the official SDK (4.x) sends
NATIVE_RATE = 24000
RATES = (8000, 16000, 22050, 24000, 44100, 48000)

_Message = dict[str, Any]


class _Socket:
    """One WebSocket shared by many contexts: a reader task routes each message to the queue
    of its `context_id`; when the socket ends, every open context gets the error at once."""

    def __init__(self, ws: ClientConnection, label: str) -> None:
        self.ws = ws
        self.label = label
        self.contexts: dict[str, asyncio.Queue[_Message | TTSError]] = {}
        self.closed: TTSError | None = None
        self.reader = asyncio.create_task(self._read(), name=f"{label} reader")

    def open(self, context_id: str) -> asyncio.Queue[_Message | TTSError]:
        queue: asyncio.Queue[_Message | TTSError] = asyncio.Queue()
        self.contexts[context_id] = queue
        return queue

    async def send(self, message: _Message) -> None:
        try:
            await self.ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise self._ended(exc) from exc

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                queue = self.contexts.get(str(message.get("context_id")))
                if queue is not None:
                    queue.put_nowait(message)
                elif message.get("type") == "error":  # about no context of ours: the socket's
                    for queue in self.contexts.values():
                        queue.put_nowait(message)
            error = self._ended(None)
        except ConnectionClosed as exc:
            error = self._ended(exc)
        for queue in self.contexts.values():
            queue.put_nowait(error)

    def _ended(self, exc: ConnectionClosed | None) -> TTSError:
        if self.closed is None:
            close = exc.rcvd if exc is not None else self.ws.protocol.close_rcvd
            detail = f"{close.code} {close.reason}".strip() if close is not None else "1006"
            message = f"{self.label}: the socket closed ({detail})"
            self.closed = TTSError(message, provider=self.label)
        return self.closed

    async def aclose(self) -> None:
        self.reader.cancel()
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


class _Connection:
    """The provider's socket, opened on first use and again after it drops (per event loop)."""

    def __init__(self, url: str, headers: dict[str, str], label: str, open_timeout: float):
        self.url = url
        self.headers = headers
        self.label = label
        self.open_timeout = open_timeout
        self._socket: _Socket | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def socket(self) -> _Socket:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a socket belongs to the loop that opened it
            self._loop, self._lock, self._socket = loop, asyncio.Lock(), None
        assert self._lock is not None
        async with self._lock:
            socket = self._socket
            if socket is None or socket.closed is not None or socket.reader.done():
                socket = self._socket = _Socket(await self._connect(), self.label)
            return socket

    async def _connect(self) -> ClientConnection:
        return await open_socket(
            self.url, self.headers, label=self.label, open_timeout=self.open_timeout
        )

    async def aclose(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None and self._loop is asyncio.get_running_loop():
            await socket.aclose()


class CartesiaTTS(SocketVoice):
    """The `TTS` protocol over Cartesia's WebSocket, a context per sentence (see module doc).
    `language` is sent with each request when given (the voice's own otherwise)."""

    provider = "cartesia"
    default_base_url = DEFAULT_BASE_URL
    default_model = DEFAULT_MODEL

    def __init__(self, voice_id: str, *, language: str | None = None, **options: Any) -> None:
        super().__init__(voice_id, **options)
        self.language = language
        headers = {"Authorization": f"Bearer {self._api_key}", "Cartesia-Version": API_VERSION}
        url = f"{self._base}/tts/websocket"
        self._connection = _Connection(url, headers, self.label, self._open_timeout)
        self.sample_rate = NATIVE_RATE
        self._encoding = "pcm_s16le"
        self._rate = NATIVE_RATE  # what Cartesia is asked for

    def for_channel(self, channel: OutputChannel) -> CartesiaTTS:
        """This voice in the format that suits `channel`, on the same shared socket."""
        view = copy.copy(self)
        view.sample_rate = channel.sample_rate
        if channel.telephone:
            view._encoding, view._rate = "pcm_mulaw", 8000
        else:
            view._encoding = "pcm_s16le"
            view._rate = channel.sample_rate if channel.sample_rate in RATES else NATIVE_RATE
        return view

    async def aclose(self) -> None:
        await self._connection.aclose()

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        """Stream `text` as one context; closing the stream early cancels the context."""
        if not text.strip():
            return
        counters.provider_request("tts", self.label)
        socket = await self._connection.socket()
        context_id = uuid.uuid4().hex
        queue = socket.open(context_id)
        done = False
        words = _WordClock(text)
        utterance = Utterance(
            text, source_rate=self._rate, output_rate=self.sample_rate, progress=words.spoken_by
        )
        pcm = PcmBytes()
        try:
            request = self._request(context_id, text)
            await socket.send(request)
            await socket.send(request | {"transcript": "", "continue": False})
            while not done:
                message = await self._next(queue)
                kind = message.get("type")
                if kind == "timestamps":
                    words.add(message.get("word_timestamps"))
                elif kind == "chunk" and message.get("data"):
                    raw = base64.b64decode(message["data"])
                    audio = exact_mulaw_decode(raw) if self._encoding == "pcm_mulaw" else None
                    chunk = utterance.feed(audio if audio is not None else pcm.feed(raw))
                    if chunk is not None:
                        yield chunk
                elif kind == "error":
                    done = True  # the server ended this context itself
                    detail = message.get("message") or message.get("title") or "error"
                    raise failure(self.label, f"error from Cartesia: {detail}")
                done = done or kind == "done" or bool(message.get("done"))
            last = utterance.finish()
            if last is not None:
                yield last
        except TTSError:
            tail = utterance.abandon()
            if tail is not None:
                yield tail
            raise
        finally:
            socket.contexts.pop(context_id, None)
            if not done and socket.closed is None:  # stopped early (barge-in): stop generating
                with contextlib.suppress(TTSError):
                    await socket.send({"context_id": context_id, "cancel": True})

    def _request(self, context_id: str, text: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "context_id": context_id,
            "model_id": self.model,
            "transcript": text.strip() + " ",
            "voice": {"id": self.voice_id},
            "output_format": {
                "container": "raw",
                "encoding": self._encoding,
                "sample_rate": self._rate,
            },
            "continue": True,
            "add_timestamps": True,
        }
        if self.language:
            request["language"] = self.language
        return request

    async def _next(self, queue: asyncio.Queue[_Message | TTSError]) -> _Message:
        try:
            async with asyncio.timeout(self._idle_timeout):
                message = await queue.get()
        except TimeoutError as exc:
            raise failure(self.label, f"no audio for {self._idle_timeout:g} s") from exc
        if isinstance(message, TTSError):
            counters.provider_failure("tts", self.label)
            raise message
        return message


class _WordClock:
    """Cartesia's word timestamps, as characters of the text spoken by a point in the audio."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._ends: list[tuple[float, int]] = []  # (end time, characters through that word)
        self._cursor = 0

    def add(self, timestamps: Any) -> None:
        if not isinstance(timestamps, dict):
            return
        words, ends = timestamps.get("words") or (), timestamps.get("end") or ()
        for word, end in zip(words, ends, strict=False):
            found = self.text.find(str(word), self._cursor)
            if found < 0:
                continue
            self._cursor = found + len(str(word))
            self._ends.append((float(end), self._cursor))

    def spoken_by(self, seconds: float) -> int | None:
        """Characters through the last word that ends by `seconds`; None before any timing
        came (the utterance then estimates)."""
        if not self._ends:
            return None
        spoken = 0
        for end, chars in self._ends:
            if end > seconds:
                break
            spoken = chars
        return spoken
