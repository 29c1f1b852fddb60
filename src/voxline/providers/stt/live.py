"""One call's speech recognition over a streaming provider: `LiveTranscriber`.

The listener hands it every inbound frame (and, where the channel has it, the frame as the
phone sent it: µ-law goes to the provider untouched) and asks for each turn's words when the
turn ends. In between it keeps what a call needs from a provider that may fail:

- **Audio kept for a re-send.** The recent audio (`keep_idle` seconds), and from the start of a
  turn all of that turn, stays here in the stream's format. A new connection (the first, a
  reconnect, a fallback provider) is sent it first, so a socket that drops mid-sentence loses no
  word: the next one hears the turn from its beginning. Words the dropped socket had already
  delivered for that stretch are forgotten, since the re-send brings them again.
- **Reconnect, then fall back.** A dropped stream is reconnected (at once, then after a short
  pause); a provider that fails `MAX_FAILURES` times in a row, or refuses (a bad key), gives way
  to the next in the chain (`"deepgram:nova-3,local"`). A batch recognizer there (Whisper)
  takes over for the rest of the call through the listener's batch path. Every failure is
  logged here and reported to `on_failure` (the pipeline's `error` event), so silence on the
  line is never unexplained.
- **Turn text.** Final words are kept with their end times on the listener's clock (stream time
  plus where the connection's audio began), so words from before the turn (noise the gate
  ignored) are left out. At the end of a turn the provider is asked to finalize, unless it has
  already ended the turn itself with nothing pending, and its answer is awaited for at most
  `FINALIZE_TIMEOUT` (then the last interim guess stands in).
- **The provider's end of turn**, for agents that want it: `ProviderEndOfTurn` ends the turn
  when the provider says so, with a silence bound in case it never does, and the plain
  strategy whenever no stream is up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from voxline.audio.end_of_turn import EndOfTurnStrategy
from voxline.providers.stt.base import (
    LINEAR16_16K,
    MULAW_8K,
    PCM16,
    STT,
    AudioFormat,
    RecognitionStream,
    StreamingSTT,
    StreamOptions,
    SttEvent,
    SttEventKind,
    SttStreamError,
    Transcript,
)
from voxline.telemetry import counters

log = structlog.get_logger("voxline.stt")

FINALIZE_TIMEOUT = 1.0
"""Seconds a turn's end waits for the provider to answer a finalize."""
RECOVERY_WAIT = 3.0
"""Seconds a turn's end waits for a stream that is reconnecting before it gives up on it."""
MAX_FAILURES = 2
"""Failures in a row (connects or drops without a word in between) before the next provider."""
RETRY_DELAY = 0.5
TURN_SLACK = 0.5
"""Words ending this long before the turn's onset still count as the turn's (provider clocks
and the VAD's onset disagree by a little)."""
MAX_TURN_AUDIO = 60.0

FailureHandler = Callable[[Exception, str], None]
EventHandler = Callable[[SttEvent], None]


def chain_of(stt: STT) -> list[STT]:
    """The providers behind `stt`, in order (a fallback chain's, or just `stt`)."""
    providers = getattr(stt, "providers", None)
    return list(providers) if isinstance(providers, list) else [stt]


def can_stream(stt: STT) -> bool:
    return any(isinstance(provider, StreamingSTT) for provider in chain_of(stt))


@dataclass(eq=False)
class _Connection:
    stream: RecognitionStream
    provider: str
    origin: float  # listener time at which this stream's audio begins
    reader: asyncio.Task[None] | None = None
    heard: bool = False  # the provider said something on it


class LiveTranscriber:
    """See the module doc. Sync methods are called on the audio hot path."""

    def __init__(
        self,
        stt: STT,
        *,
        language: str | None = None,
        hints: Sequence[str] = (),
        end_of_turn_silence: float | None = None,
        on_event: EventHandler | None = None,
        on_failure: FailureHandler | None = None,
        keep_idle: float = 2.0,
        max_turn_audio: float = MAX_TURN_AUDIO,
    ) -> None:
        self._chain = chain_of(stt)
        self._language = language
        self._hints = tuple(hints)
        self._eot_silence = end_of_turn_silence
        self._on_event = on_event
        self._on_failure = on_failure
        self._keep_idle = keep_idle
        self._max_turn = max_turn_audio
        self.format: AudioFormat | None = None
        self.batch: STT | None = None  # the chain fell back to this batch recognizer
        self._index = 0
        self._failures = 0
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # a connection came or went
        self._clock = 0.0  # seconds of audio pushed: the listener's timeline
        self._frames: deque[tuple[float, bytes]] = deque()
        self._turn_start: float | None = None
        self._capped = False
        self._unconverted = 0
        self._finals: list[tuple[str, float]] = []  # text, end (listener time), oldest first
        self._interim = ""  # the provider's latest guess after its last final words
        self._interim_end = 0.0
        self._waiters: list[asyncio.Future[None]] = []
        self.provider_ended = False  # the provider ended the turn and heard nothing since
        self._exhausted = False
        self._closed = False

    # -- state the listener reads ------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        """A stream is open: live words are coming."""
        return self._conn is not None

    def text_so_far(self) -> str:
        """The current turn's words: final ones, then the provider's latest guess."""
        start = self._turn_start
        parts = [text for text, end in self._finals if start is None or end > start - TURN_SLACK]
        if self._interim:
            parts.append(self._interim)
        return " ".join(parts)

    # -- the hot path ------------------------------------------------------------------------
    def push(self, pcm: PCM16, native: bytes | None = None) -> None:
        """One frame: `pcm` as the listener hears it (16 kHz), `native` the channel's own
        µ-law bytes of the same frame when it has them."""
        if self._closed or self.batch is not None or self._exhausted:
            return
        if self.format is None:
            self.format = self._choose(native is not None)
            self._advance()
        data = self._encode(pcm, native)
        start = self._clock
        self._clock += len(pcm) / LINEAR16_16K.sample_rate
        if data is None:
            return
        self._frames.append((start, data))
        self._trim()
        if self._conn is not None:
            self._conn.stream.send(data)

    def turn_started(self, onset: float) -> None:
        """The gate confirmed speech that began at `onset` (listener time)."""
        self._turn_start = onset
        self.provider_ended = False

    # -- a turn's words ----------------------------------------------------------------------
    def finish_turn(self, pcm: PCM16) -> Coroutine[Any, Any, Transcript]:
        """The words of the turn that just ended (`pcm`: its audio, for a batch fallback). The
        turn's onset is taken now, so a turn that starts before these words are in is its own."""
        duration = len(pcm) / LINEAR16_16K.sample_rate
        onset = self._turn_start if self._turn_start is not None else self._clock - duration
        self._turn_start = onset
        return self._finish(pcm, onset, duration)

    async def _finish(self, pcm: PCM16, onset: float, duration: float) -> Transcript:
        try:
            text = await self._turn_text(pcm, onset)
        finally:
            if self._turn_start == onset:  # else the caller spoke again meanwhile: their turn
                self._turn_start = None
                self.provider_ended = False
                self._trim()
        return Transcript(text.strip(), language=self._language, audio_duration=duration)

    def _take(self, onset: float) -> str:
        """The words of the turn that began at `onset`, taken out. A turn that began since
        (its onset is `_turn_start` now) keeps the words that end after its onset."""
        newer = self._turn_start if self._turn_start != onset else None
        taken: list[str] = []
        kept: list[tuple[str, float]] = []
        for text, end in self._finals:
            if newer is not None and end > newer - TURN_SLACK:
                kept.append((text, end))
            elif end > onset - TURN_SLACK:
                taken.append(text)
        self._finals = kept
        if self._interim and (newer is None or self._interim_end <= newer - TURN_SLACK):
            taken.append(self._interim)
            self._interim = ""
        return " ".join(taken)

    async def _turn_text(self, pcm: PCM16, onset: float) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECOVERY_WAIT
        while True:
            conn = self._conn
            if conn is not None:
                if not (self.provider_ended and not self._interim):
                    await self._finalize(conn)
                    if conn is not self._conn:
                        continue  # it dropped meanwhile: the next one hears the turn again
                return self._take(onset)
            if self.batch is not None:
                return (await self.batch.transcribe(pcm, language=self._language)).text
            remaining = deadline - loop.time()
            if self._exhausted or remaining <= 0:
                return await self._last_resort(pcm)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    async def _finalize(self, conn: _Connection) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        conn.stream.finalize()
        try:
            async with asyncio.timeout(FINALIZE_TIMEOUT):
                await waiter
        except TimeoutError:
            log.info(
                "stt finalize not answered in time: the latest words stand", provider=conn.provider
            )
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    async def _last_resort(self, pcm: PCM16) -> str:
        """No stream came back in time: a batch recognizer later in the chain transcribes this
        turn, else the turn is lost (and said so)."""
        for provider in self._chain[self._index :]:
            if not isinstance(provider, StreamingSTT):
                return (await provider.transcribe(pcm, language=self._language)).text
        raise SttStreamError(
            "no speech recognizer is available: the caller's turn was not transcribed",
            provider=",".join(p.label for p in self._chain),
        )

    # -- connections -------------------------------------------------------------------------
    def _choose(self, has_native: bool) -> AudioFormat:
        streaming = [p for p in self._chain if isinstance(p, StreamingSTT)]
        if has_native and streaming and all(p.accepts(MULAW_8K) for p in streaming):
            return MULAW_8K
        return LINEAR16_16K

    def _encode(self, pcm: PCM16, native: bytes | None) -> bytes | None:
        if self.format is MULAW_8K:
            if native is None:
                self._unconverted += 1  # the channel stopped giving µ-law: nothing to send
                return None
            return native
        return pcm.astype("<i2", copy=False).tobytes()

    def _advance(self) -> None:
        """Connect to the provider at `_index`, or take it as the batch fallback."""
        if self._closed:
            return
        if self._index >= len(self._chain):
            self._exhausted = True
            self._changed.set()
            self._report(
                SttStreamError("every speech recognizer failed", provider=self._label()),
                "no speech recognizer is left for this call: turns cannot be transcribed",
            )
            return
        provider = self._chain[self._index]
        if isinstance(provider, StreamingSTT):
            self._connecting = asyncio.create_task(self._connect(provider))
            return
        self.batch = provider
        self._frames.clear()
        self._changed.set()
        log.warning("stt falls back to a batch recognizer for this call", provider=provider.label)

    async def _connect(self, provider: StreamingSTT) -> None:
        assert self.format is not None
        if self._failures:
            await asyncio.sleep(RETRY_DELAY * (self._failures - 1))
        options = StreamOptions(
            self.format,
            language=self._language,
            end_of_turn_silence=self._eot_silence,
            hints=self._hints,
        )
        counters.provider_request("stt", provider.label)
        try:
            stream = await provider.open_stream(options)
        except Exception as exc:
            self._failed(provider, exc, "could not connect")
            return
        if self._closed:
            stream.abort()
            return
        origin = self._frames[0][0] if self._frames else self._clock
        for _, data in self._frames:  # the turn so far (or the recent audio), again
            stream.send(data)
        self._finals = [(text, end) for text, end in self._finals if end <= origin]
        self._interim = ""
        conn = _Connection(stream, provider.label, origin)
        conn.reader = asyncio.create_task(self._consume(conn, provider))
        self._conn = conn
        self._changed.set()
        log.info("stt stream open", provider=provider.label, resent=round(self._clock - origin, 2))

    async def _consume(self, conn: _Connection, provider: StreamingSTT) -> None:
        try:
            async for event in conn.stream.events():
                self._on(conn, event)
        except Exception as exc:
            if conn is self._conn:
                self._conn = None
                self._release_waiters()
                self._failed(provider, exc, "dropped")
            return

    def _failed(self, provider: STT, exc: Exception, what: str) -> None:
        if self._closed:
            return
        retryable = not isinstance(exc, SttStreamError) or exc.retryable
        counters.provider_failure("stt", provider.label)
        self._failures += 1
        give_up = not retryable or self._failures >= MAX_FAILURES
        rest = self._chain[self._index + 1 :]
        if give_up:
            counters.fallback(provider.label)
            then = f"falling back to {rest[0].label}" if rest else "no fallback left"
        else:
            then = "reconnecting"
        self._report(exc, f"speech recognizer {provider.label} {what}: {then}")
        if give_up:
            self._index += 1
            self._failures = 0
        self._changed.set()
        self._advance()

    def _on(self, conn: _Connection, event: SttEvent) -> None:
        if not conn.heard:
            conn.heard = True
            self._failures = 0
        kind = event.kind
        if kind is SttEventKind.INTERIM:
            self._interim, self._interim_end = event.text, conn.origin + event.end
            if event.text:
                self.provider_ended = False
        elif kind is SttEventKind.FINAL:
            if event.text:
                self._finals.append((event.text, conn.origin + event.end))
            self._interim = ""
        elif kind is SttEventKind.SPEECH_STARTED:
            self.provider_ended = False
        elif kind is SttEventKind.END_OF_TURN:
            self.provider_ended = True
        if kind in (SttEventKind.FINALIZED, SttEventKind.END_OF_TURN):
            self._release_waiters()
        if self._on_event is not None:
            self._on_event(event)

    def _release_waiters(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- bookkeeping -------------------------------------------------------------------------
    def _trim(self) -> None:
        """Keep the recent audio, or the turn so far (bounded)."""
        if self._turn_start is None:
            limit = self._clock - self._keep_idle
        else:
            limit = min(self._turn_start - self._keep_idle, self._clock - self._keep_idle)
            if self._clock - limit > self._max_turn:
                limit = self._clock - self._max_turn
                if not self._capped:
                    self._capped = True
                    log.warning("turn audio kept for a re-send is over its cap", cap=self._max_turn)
        frames = self._frames
        while frames and frames[0][0] < limit:
            frames.popleft()

    def _report(self, exc: Exception, message: str) -> None:
        """To the owner (the pipeline logs it with the session and emits an `error` event), or
        to the log when there is none."""
        if self._on_failure is not None:
            self._on_failure(exc, message)
        else:
            log.warning(message, error=str(exc) or type(exc).__name__)

    def _label(self) -> str:
        return ",".join(p.label for p in self._chain)

    async def aclose(self) -> None:
        """The call is over: close the stream with the provider's handshake (bounded)."""
        self._closed = True
        connecting = self._connecting
        if connecting is not None and not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        conn, self._conn = self._conn, None
        self._release_waiters()
        if conn is None:
            return
        await conn.stream.close()
        if conn.reader is not None:
            conn.reader.cancel()
            await asyncio.gather(conn.reader, return_exceptions=True)
        if self._unconverted:
            log.warning(
                "frames without µ-law were not sent to the recognizer", count=self._unconverted
            )


class ProviderEndOfTurn:
    """End-of-turn strategy for agents with `turn.end_of_turn = "provider"`: the turn ends when
    the streaming provider says so (after at least one silent VAD chunk), or after
    `max_silence` if it never does; with no stream up, `fallback` decides as usual."""

    def __init__(
        self, live: LiveTranscriber, fallback: EndOfTurnStrategy, *, max_silence: float = 4.0
    ) -> None:
        self.live = live
        self.fallback = fallback
        self.max_silence = max_silence

    def is_complete(self, silence: float) -> bool:
        if not self.live.streaming:
            return self.fallback.is_complete(silence)
        return self.live.provider_ended or silence >= self.max_silence

    def update_transcript(self, text: str) -> None:
        self.fallback.update_transcript(text)

    def reset(self) -> None:
        self.fallback.reset()
