"""Inbound: caller frames to turn events, with the transcript started before the turn ends.

The hot path is `Listener.push`: one resampler call and one `SpeechGate.push` per frame, inline,
and a list append per speech chunk. Everything slower (STT) runs in tasks started only at the few
moments that need one.

Whisper-style STT is not streaming, so the final transcript would normally start only once the
end-of-turn silence has elapsed. Instead, the moment the caller has been silent for
`prefetch_after` seconds, the speech so far is transcribed in the background: if the caller does
not speak again, that transcript is the final one and is ready (or nearly) when the turn ends,
and it also reaches the end-of-turn strategy, so a semantic strategy can end the turn sooner.

The turn's audio kept here (for those early transcriptions and barge-in checks) is capped at
`max_turn_audio` seconds: by default 60 s, twice the gate's own cut (`TurnOptions.max_utterance`
ends a turn at 30 s), so it is a safety net that a working gate never reaches. Past it, later
speech is not kept (counted in `dropped_samples`, logged once per turn) and the early
transcriptions hear the turn's beginning; the final transcript comes from the gate's recording.

A streaming recognizer (Deepgram, AssemblyAI; `can_stream`) is driven by a `LiveTranscriber`
instead: every frame goes to it as it arrives (the channel's own µ-law where it has it, since the
VAD here needs PCM but the provider does not), its words so far are `live_text()` (barge-in
judges them with no transcription to wait for), each turn's words come from it when the turn
ends, and with `provider_end_of_turn` the provider's end-of-turn signal ends the turn. If its
chain falls back to a batch recognizer mid-call, the batch path above takes over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import numpy as np
import structlog

from voxline.audio.end_of_turn import EndOfTurnStrategy, SilenceEndOfTurn
from voxline.audio.resample import StreamResampler
from voxline.audio.turn_taking import (
    GateEvent,
    SpeechChunk,
    SpeechEnded,
    SpeechGate,
    SpeechStarted,
    TurnOptions,
)
from voxline.providers.stt.base import PCM16, STT, SttEvent, SttEventKind, Transcript
from voxline.providers.stt.live import LiveTranscriber, ProviderEndOfTurn, can_stream
from voxline.providers.vad.base import VAD
from voxline.telemetry import counters

log = structlog.get_logger("voxline.voice")
MAX_TURN_AUDIO = 60.0  # seconds of one turn's audio kept; see the module doc


class PauseWatch:
    """Wraps the end-of-turn strategy to notice the caller pausing inside a turn.

    The gate asks the strategy about every silent chunk of a turn, with the silence so far, so
    the strategy is where pauses are seen without a second VAD bookkeeping. A call whose silence
    is not longer than the previous one's starts a new pause (`pause_id` counts them); the first
    call of each pause that reaches `after` seconds raises `fired` for its owner to act on.
    """

    def __init__(self, inner: EndOfTurnStrategy, after: float) -> None:
        self.inner = inner
        self.after = after
        self.pause_id = 0
        self.fired = False  # a pause reached `after` and nobody has acted on it yet
        self._last = 0.0
        self._reached = False

    def is_complete(self, silence: float) -> bool:
        if silence <= self._last:
            self.pause_id += 1
            self._reached = False
        self._last = silence
        if not self._reached and silence >= self.after:
            self._reached = self.fired = True
        return self.inner.is_complete(silence)

    def update_transcript(self, text: str) -> None:
        self.inner.update_transcript(text)

    def reset(self) -> None:
        self.pause_id += 1
        self._last = 0.0
        self._reached = self.fired = False
        self.inner.reset()


class Listener:
    """One caller's inbound audio: resample once to the VAD rate, gate, keep the turn's audio."""

    def __init__(
        self,
        vad: VAD,
        stt: STT,
        *,
        input_rate: int,
        options: TurnOptions,
        end_of_turn: EndOfTurnStrategy | None = None,
        prefetch_after: float = 0.2,
        language: str | None = None,
        max_turn_audio: float | None = None,
        provider_end_of_turn: bool = False,
        on_stt_error: Callable[[Exception, str], None] | None = None,
        on_events: Callable[[Sequence[GateEvent]], None] | None = None,
    ) -> None:
        """`on_events`: where gate events go when they come after `push` returned. Given it,
        a batching VAD (Silero) answers each window with every other call's windows of the same
        loop turn, one model run for all of them, and `push` returns no events; without it
        the VAD runs inline and `push` returns them."""
        if stt.sample_rate != vad.sample_rate:
            raise ValueError(
                f"STT takes {stt.sample_rate} Hz and VAD {vad.sample_rate} Hz: they must match"
            )
        self.stt = stt
        self.language = language
        self._resampler = StreamResampler(input_rate, vad.sample_rate)
        if max_turn_audio is None:
            max_turn_audio = max(MAX_TURN_AUDIO, options.max_utterance + options.pre_roll)
        self.live: LiveTranscriber | None = None
        if can_stream(stt):
            self.live = LiveTranscriber(
                stt,
                language=language,
                end_of_turn_silence=options.end_of_turn_silence if provider_end_of_turn else None,
                on_event=self._heard,
                on_failure=on_stt_error,
                max_turn_audio=max_turn_audio,
            )
        strategy = end_of_turn or SilenceEndOfTurn(options.end_of_turn_silence)
        if self.live is not None and provider_end_of_turn:
            strategy = ProviderEndOfTurn(self.live, strategy)
        getattr(strategy, "listen", lambda source: None)(self.speech_so_far)  # audio-based EOT
        self.pauses = PauseWatch(strategy, prefetch_after)
        self.on_events = on_events
        self.gate = SpeechGate(
            vad,
            options.model_copy(update={"emit_chunks": True}),
            end_of_turn=self.pauses,
            on_events=self._events_later if on_events is not None else None,
        )
        self.started: float | None = None  # audio time the current turn's speech began
        self._chunks: list[PCM16] = []
        self._kept = 0  # samples in `_chunks`
        self._capped = False  # this turn reached the cap (logged once per turn)
        self._max_kept = round(max_turn_audio * vad.sample_rate)
        self.dropped_samples = 0  # speech past the cap, over all turns
        self._early: tuple[int, asyncio.Task[Transcript]] | None = None
        self._tasks: set[asyncio.Task[Transcript]] = set()
        # words while the caller talks, for a strategy that asks for them (smart-turn)
        self._end_of_turn = end_of_turn
        every = getattr(end_of_turn, "transcribe_every", None)
        self._partial_every = round(every * vad.sample_rate) if every else 0
        self._partial_at = 0  # `_kept` when the last one started
        self._partial: asyncio.Task[Transcript] | None = None
        self._turn_id = 0
        self.on_words: Callable[[str], None] | None = None
        """Told the current turn's words so far while the caller still speaks (a stream's
        interim text, or a batch recognizer's transcript at a pause), so a page can show them
        before the turn ends; the final transcript still comes with the turn."""
        self.on_early_transcript: Callable[[int, str], None] | None = None
        """Told `(pause_id, text)` when the speech so far was transcribed at a pause and the
        caller is still silent in it: the voice pipeline starts a speculative reply there."""

    @property
    def user_speaking(self) -> bool:
        return self.gate.user_speaking

    def still_paused(self, pause_id: int) -> bool:
        """The caller is still silent in pause `pause_id` of the current turn: no new pause
        began, and the latest VAD chunk is not speech (so speaking again is seen within a
        chunk, not only when the next pause begins)."""
        gate = self.gate
        return (
            gate.user_speaking
            and self.pauses.pause_id == pause_id
            and gate.probability < gate.options.deactivation_threshold
        )

    @property
    def streaming(self) -> bool:
        """Turns are transcribed by a streaming recognizer (not, or no longer, a batch one)."""
        return self.live is not None and self.live.batch is None

    def live_text(self) -> str | None:
        """The current turn's words as a live stream has them; None without an open stream."""
        return self.live.text_so_far() if self.live is not None and self.live.streaming else None

    @property
    def busy(self) -> bool:
        """A transcription is running."""
        return bool(self._tasks)

    def push(self, pcm: PCM16, native: bytes | None = None) -> Sequence[GateEvent]:
        """One inbound frame at the channel's rate (`native`: the same frame as the channel's
        µ-law, for a recognizer that takes it as is); returns the gate events it completed."""
        audio = self._resampler.process(pcm)
        if self.live is not None:
            self.live.push(audio, native)
        events = self.gate.push(audio)
        if events:
            self._absorb(events)
        return events

    def flush(self) -> Sequence[GateEvent]:
        """The caller's audio ended: a turn in progress ends now."""
        events = self.gate.flush()
        self._absorb(events)
        return events

    def speech_so_far(self) -> PCM16:
        """The current turn's audio from its pre-roll to now (one copy)."""
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)

    def transcribe(self, pcm: PCM16) -> asyncio.Task[Transcript]:
        stt = self.live.batch if self.live is not None and self.live.batch is not None else self.stt
        return self._track(stt.transcribe(pcm, language=self.language))

    def _track(self, work: Coroutine[Any, Any, Transcript]) -> asyncio.Task[Transcript]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def final_transcript(self, ended: SpeechEnded) -> Awaitable[Transcript]:
        """The transcript of a finished turn: the one begun at its last pause when the caller
        said nothing after it, else a transcription of the whole turn, started now."""
        if self.live is not None and self.streaming:
            return self._track(self.live.finish_turn(ended.audio.pcm))
        early, self._early = self._early, None
        if early is not None and ended.reason == "silence" and early[0] == self.pauses.pause_id:
            return early[1]
        return self.transcribe(ended.audio.pcm)

    def _events_later(self, events: Sequence[GateEvent]) -> None:
        """Gate events a batching VAD completed after `push` returned."""
        self._absorb(events)
        if self.on_events is not None:
            self.on_events(events)

    def close(self) -> None:
        self.gate.close()  # windows still waiting for a batched VAD are not answered
        for task in self._tasks:
            task.cancel()

    async def aclose(self) -> None:
        """`close`, and a streaming recognizer's close handshake (bounded)."""
        self.close()
        if self.live is not None:
            await self.live.aclose()

    def _heard(self, event: SttEvent) -> None:
        """A streaming recognizer's words reach the end-of-turn strategy as they come."""
        if event.kind in (SttEventKind.INTERIM, SttEventKind.FINAL) and self.live is not None:
            self.pauses.update_transcript(self.live.text_so_far())
            self._tell_words(self.live.text_so_far())

    def _tell_words(self, text: str) -> None:
        if self.on_words is not None and text.strip():
            self.on_words(text.strip())

    def _absorb(self, events: Sequence[GateEvent]) -> None:
        for event in events:
            if isinstance(event, SpeechChunk):
                self._keep(event.audio.pcm)
            elif isinstance(event, SpeechStarted):
                self._chunks, self._kept, self._capped = [], 0, False
                self._early = None
                self._stop_partial()
                self._turn_id += 1
                self.started = event.t
                if self.live is not None:
                    self.live.turn_started(event.t)
            else:
                self.started = None
                self._stop_partial()  # the final transcript needs the recognizer now
        if self.pauses.fired and self.gate.user_speaking:
            self.pauses.fired = False
            if not self.streaming:  # a stream's words are ready without it
                self._prefetch()
        if self._partial_every and self.gate.user_speaking and not self.streaming:
            self._transcribe_while_speaking()

    def _transcribe_while_speaking(self) -> None:
        """The words of the turn so far for an end-of-turn strategy with `transcribe_every`
        (to its `update_partial(text, seconds of the turn's audio they cover)`): one
        transcription at a time, each after that much more speech, never started in a pause
        (the pause's own early transcript covers that). It costs the recognizer's thread one
        transcription per `transcribe_every` seconds of speech."""
        if (
            self._partial is not None
            or (self._early is not None and not self._early[1].done())  # a pause's is coming
            or self._kept - self._partial_at < self._partial_every
            or self.gate.probability < self.gate.options.deactivation_threshold
        ):
            return
        turn, self._partial_at = self._turn_id, self._kept
        covers = self._kept / self.stt.sample_rate  # seconds of the turn the words will cover
        task = self._partial = self.transcribe(self.speech_so_far())
        tell: Callable[[str, float], None] | None = getattr(
            self._end_of_turn, "update_partial", None
        )

        def heard(done: asyncio.Task[Transcript]) -> None:
            if self._partial is done:
                self._partial = None
            if done.cancelled() or done.exception() is not None or turn != self._turn_id:
                return
            if tell is not None:
                tell(done.result().text, covers)

        task.add_done_callback(heard)

    def _stop_partial(self) -> None:
        """Drop a transcription of speech so far that has not started (a running one ends on
        the recognizer's thread; its words are ignored)."""
        if self._partial is not None:
            self._partial.cancel()
            self._partial = None

    def _keep(self, pcm: PCM16) -> None:
        room = self._max_kept - self._kept  # never negative
        if len(pcm) > room:
            self.dropped_samples += len(pcm) - room
            counters.dropped("turn audio beyond the cap")
            if not self._capped:
                self._capped = True
                log.warning("turn audio over its cap: the rest is not kept", cap=self._max_kept)
            pcm = pcm[:room]
        if len(pcm):
            self._chunks.append(pcm)
            self._kept += len(pcm)

    def _prefetch(self) -> None:
        pause = self.pauses.pause_id
        task = self.transcribe(self.speech_so_far())
        self._early = (pause, task)

        def heard(done: asyncio.Task[Transcript]) -> None:
            if not done.cancelled() and done.exception() is None and self.pauses.pause_id == pause:
                self.pauses.update_transcript(done.result().text)
                self._tell_words(done.result().text)
                if self.on_early_transcript is not None and self.still_paused(pause):
                    self.on_early_transcript(pause, done.result().text)

        task.add_done_callback(heard)
