"""What every WebSocket recognizer needs, whatever the provider: `SocketStream`.

A provider module says how to connect, how to send audio and each control message, and how to
read the provider's messages as `SttEvent`s; this class owns the rest, the same way for all:

- `send` is called per inbound frame on the audio hot path, so it only appends to a queue; one
  writer task drains it to the socket. The queue is bounded (`MAX_QUEUED_SECONDS` of audio):
  a socket that stopped taking audio is a failed stream, not a growing buffer.
- Audio can be coalesced to a provider's minimum chunk (AssemblyAI refuses messages under
  50 ms; Twilio frames are 20 ms). The remainder is padded with silence when a finalize or the
  close needs it flushed.
- A keepalive goes out whenever no audio has been sent for `keepalive_every` seconds (Deepgram
  closes an idle socket after 10 s), so a channel that pauses its audio keeps its stream.
- `close` sends the provider's close message and waits (bounded) for the provider to deliver
  its last words and close the socket; `abort` drops it at once.
- A provider error, a dropped socket or a close we did not ask for ends `events` with
  `SttStreamError`, which is what the per-call transcriber reconnects or falls back on.

`transcribe_by_stream` gives a streaming provider the batch `STT.transcribe` too, for anything
that transcribes one utterance (the Realtime-compatible endpoint, a fallback chain).
`SocketSTT` is what the WebSocket recognizers (Deepgram, AssemblyAI) share above their streams:
a model, a key, a base URL (`VOXLINE_<PROVIDER>_BASE_URL`), both audio formats, a stream per
`open_stream`, and `transcribe` over a short stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import ClassVar, Literal

import numpy as np
import structlog

from voxline.providers.stt.base import (
    LINEAR16_16K,
    PCM16,
    AudioFormat,
    RecognitionStream,
    StreamingSTT,
    StreamOptions,
    SttEvent,
    SttEventKind,
    SttStreamError,
    Transcript,
)
from voxline.tasks import put_final
from voxline.telemetry import counters

EVENTS_LIMIT = 1024  # recognizer events waiting for the listener; past it the socket read waits

log = structlog.get_logger("voxline.stt")

Control = Literal["finalize", "keepalive", "close"]
MAX_QUEUED_SECONDS = 10.0
"""Audio waiting for the socket before the stream counts as failed: far more than a healthy
socket ever holds back (a frame or two), far less than a caller would wait for."""
CLOSE_TIMEOUT = 2.0
"""Seconds `close` waits for the provider's last words and its close."""
KEEPALIVE_EVERY = 4.0
"""Seconds without audio before a keepalive is sent (Deepgram asks for one every 3-5 s)."""
_DONE = object()


class SocketStream(ABC):
    """A `RecognitionStream` over one WebSocket; subclasses implement the `_` hooks."""

    keepalive_every = KEEPALIVE_EVERY
    max_queued = MAX_QUEUED_SECONDS

    def __init__(self, format: AudioFormat, *, provider: str, min_chunk: float = 0.0) -> None:
        self.format = format
        self.provider = provider
        self._min_chunk = round(min_chunk * format.bytes_per_second)
        self._max_queued = round(self.max_queued * format.bytes_per_second)
        self._pending = bytearray()  # audio shorter than `min_chunk`, not yet queued
        self._queue: deque[bytes | Control] = deque()
        self._queued = 0  # audio bytes in `_queue`
        self._wake = asyncio.Event()
        # Bounded: a listener that falls behind slows our reading of the socket instead of
        # growing memory; the stream's end always gets in (`put_final`).
        self._events: asyncio.Queue[SttEvent | BaseException | object] = asyncio.Queue(EVENTS_LIMIT)
        self._closing = False
        self._finished = False
        self._tasks: list[asyncio.Task[None]] = []
        self.sent_bytes = 0  # audio written to the socket

    # -- provider hooks ----------------------------------------------------------------------
    @abstractmethod
    async def _connect(self) -> None:
        """Open the socket; raise `SttStreamError` (or anything) when it cannot be opened."""

    @abstractmethod
    async def _send_audio(self, audio: bytes) -> None: ...

    @abstractmethod
    async def _send_control(self, kind: Control) -> None: ...

    @abstractmethod
    def _messages(self) -> AsyncIterator[object]:
        """The provider's messages until the socket closes (normally: the iterator ends;
        abnormally: it raises)."""

    @abstractmethod
    def _parse(self, message: object) -> Iterable[SttEvent]:
        """A message as events; raise `SttStreamError` for a provider's error message."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Close the socket now (after the handshake, or instead of it)."""

    # -- RecognitionStream -------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and start the writer and reader; a failure is an `SttStreamError`."""
        counters.provider_request("stt", self.provider)
        try:
            await self._connect()
        except SttStreamError:
            counters.provider_failure("stt", self.provider)
            raise
        except Exception as exc:
            counters.provider_failure("stt", self.provider)
            raise SttStreamError(
                f"{self.provider}: could not connect: {exc or type(exc).__name__}",
                provider=self.provider,
            ) from exc
        self._tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._read())]

    def send(self, audio: bytes) -> None:
        if self._closing or not audio:
            return
        if self._min_chunk:
            self._pending += audio
            if len(self._pending) < self._min_chunk:
                return
            audio, self._pending = bytes(self._pending), bytearray()
        if self._queued + len(audio) > self._max_queued:
            self._fail(
                SttStreamError(
                    f"{self.provider}: the socket stopped taking audio", provider=self.provider
                )
            )
            return
        self._queue.append(audio)
        self._queued += len(audio)
        self._wake.set()

    def finalize(self) -> None:
        self._control("finalize")

    def keepalive(self) -> None:
        self._control("keepalive")

    async def events(self) -> AsyncIterator[SttEvent]:
        while True:
            item = await self._events.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, SttEvent)
            yield item

    async def close(self) -> None:
        if self._closing:
            await self._settle()
            return
        self._control("close")
        self._closing = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        except TimeoutError:
            log.warning("stt stream did not close in time: dropped", provider=self.provider)
        await self._settle()

    def abort(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        self._finish()
        self._tasks.append(asyncio.create_task(self._disconnect_quietly()))

    # -- inside ------------------------------------------------------------------------------
    def _control(self, kind: Control) -> None:
        if self._closing:
            return
        if self._pending and kind != "keepalive":  # flush, padded to the provider's minimum
            pad = self._min_chunk - len(self._pending)
            self._queue.append(bytes(self._pending) + bytes([self.format.silence_byte]) * pad)
            self._queued += self._min_chunk
            self._pending = bytearray()
        self._queue.append(kind)
        self._wake.set()

    async def _write(self) -> None:
        try:
            while True:
                while not self._queue:
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(self.keepalive_every):
                            await self._wake.wait()
                    except TimeoutError:
                        self._queue.append("keepalive")
                item = self._queue.popleft()
                if isinstance(item, bytes):
                    self._queued -= len(item)
                    await self._send_audio(item)
                    self.sent_bytes += len(item)
                else:
                    await self._send_control(item)
                    if item == "close":
                        return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(self._error("the socket failed while sending", exc))

    async def _read(self) -> None:
        try:
            async for message in self._messages():
                for event in self._parse(message):
                    await self._events.put(event)
        except asyncio.CancelledError:
            raise
        except SttStreamError as exc:
            self._fail(exc)
            return
        except Exception as exc:
            self._fail(self._error("the socket failed", exc))
            return
        if self._closing:
            self._finish()
        else:
            self._fail(
                SttStreamError(f"{self.provider}: closed the stream", provider=self.provider)
            )

    def _error(self, what: str, exc: BaseException) -> SttStreamError:
        error = SttStreamError(
            f"{self.provider}: {what}: {exc or type(exc).__name__}", provider=self.provider
        )
        error.__cause__ = exc
        return error

    def _fail(self, error: SttStreamError) -> None:
        if self._finished:
            return
        counters.provider_failure("stt", self.provider)
        self._finished = self._closing = True
        put_final(self._events, error)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks.append(asyncio.create_task(self._disconnect_quietly()))

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            put_final(self._events, _DONE)

    async def _settle(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        await self._disconnect_quietly()
        self._finish()

    async def _disconnect_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self._disconnect()


def is_silent(pcm: PCM16) -> bool:
    """Digital silence: nothing a recognizer could hear, and nothing worth paying for. (The
    speech pool warms every STT with exactly this at start-up.)"""
    return not np.any(pcm)


async def transcribe_by_stream(
    stt: StreamingSTT,
    pcm: PCM16,
    *,
    language: str | None = None,
    chunk: float = 0.1,
) -> Transcript:
    """One utterance over a short stream: send it all, finalize, close, and join the final
    words (the last interim guess when the provider finalizes nothing)."""
    duration = len(pcm) / LINEAR16_16K.sample_rate
    if is_silent(pcm):
        return Transcript("", language=language, audio_duration=duration)
    stream = await stt.open_stream(StreamOptions(LINEAR16_16K, language=language))
    step = round(chunk * LINEAR16_16K.sample_rate)
    data = pcm.astype("<i2", copy=False)
    for start in range(0, len(data), step):
        stream.send(data[start : start + step].tobytes())
    stream.finalize()
    finals: list[str] = []
    interim = ""
    reader = asyncio.ensure_future(_collect(stream, finals))
    try:
        await stream.close()
        interim = await reader
    finally:
        reader.cancel()  # owned here: cancelled and awaited however the close went
        await asyncio.gather(reader, return_exceptions=True)
    text = " ".join(part for part in finals if part) or interim
    return Transcript(text.strip(), language=language, audio_duration=duration)


async def _collect(stream: RecognitionStream, finals: list[str]) -> str:
    interim = ""
    async for event in stream.events():
        if event.kind is SttEventKind.FINAL:
            finals.append(event.text)
            interim = ""
        elif event.kind is SttEventKind.INTERIM:
            interim = event.text
    return interim


class SocketSTT(ABC):
    """A `StreamingSTT` whose streams are `SocketStream`s; subclasses name the provider and
    make the stream (`_stream`)."""

    provider: ClassVar[str]
    default_base_url: ClassVar[str]
    sample_rate = LINEAR16_16K.sample_rate  # what `transcribe` takes

    def __init__(self, model: str, *, api_key: str, base_url: str | None = None) -> None:
        self.model = model
        self.label = f"{self.provider}:{model}"
        self.api_key = api_key
        self.base_url = websocket_base(base_url, self.default_base_url)

    def accepts(self, audio: AudioFormat) -> bool:
        """Both take PCM16 and a phone call's µ-law, as is."""
        return audio.encoding in ("linear16", "mulaw")

    @abstractmethod
    def _stream(self, options: StreamOptions) -> SocketStream: ...

    async def open_stream(self, options: StreamOptions) -> RecognitionStream:
        stream = self._stream(options)
        await stream.start()
        return stream

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        return await transcribe_by_stream(self, pcm, language=language)


REFUSED = frozenset({400, 401, 402, 403, 404})
"""Handshake statuses a retry would get again (a bad request, key or plan): no reconnect."""


def refused(provider: str, status: int | None, detail: str = "") -> SttStreamError:
    """A handshake that failed, `retryable` unless its status says trying again cannot help."""
    return SttStreamError(
        f"{provider}: could not connect: " + (f"HTTP {status}" if status else detail),
        provider=provider,
        retryable=status not in REFUSED,
    )


def websocket_base(url: str | None, default: str) -> str:
    """A provider's socket base from its base URL setting: an `http(s)://` override (what
    people write for a private deployment or a test fake) becomes `ws(s)://`."""
    base = (url or default).rstrip("/")
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    return base
