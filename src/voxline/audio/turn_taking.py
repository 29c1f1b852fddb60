"""The inbound hot path: re-block caller audio for the VAD and decide when a turn starts and ends.

`SpeechGate.push` is called with every inbound frame and does its work inline, returning the
events it produced: no task, queue or callback registration per frame, and no allocation beyond
numpy's own once the buffers exist. All times are seconds of audio fed to the gate (the caller's
audio clock), so decisions are deterministic and independent of event-loop scheduling.

Given `on_events` and a VAD that batches (Silero, `BatchingVAD`), the gate hands each full window
to the VAD instead and keeps a copy; when the loop turn's batch has run (`providers/vad/batch.py`)
the probability comes back, the same state machine steps on the kept window, and any events go to
`on_events` rather than being returned by `push`. The decisions are the same, one event-loop turn
later (microseconds), and many calls share one model run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from voxline.audio.buffers import Recording, SampleRing
from voxline.audio.end_of_turn import EndOfTurnStrategy, SilenceEndOfTurn
from voxline.audio.frames import AudioFrame
from voxline.providers.vad.base import VAD, BatchedVADStream, BatchingVAD


class TurnOptions(BaseModel):
    """How eagerly a user's speech starts and ends a turn. Durations are seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    activation_threshold: float = Field(
        0.5, gt=0, le=1, description="VAD probability at which a chunk can start speech."
    )
    deactivation_threshold: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Once speech has started, chunks count as speech down to this lower "
        "probability (hysteresis), so a softer syllable does not look like silence.",
    )
    min_speech: float = Field(
        0.2,
        ge=0,
        description="Continuous speech needed before a turn is confirmed; shorter bursts "
        "(clicks, coughs, a door) never start a turn or interrupt the bot.",
    )
    end_of_turn_silence: float = Field(
        0.6,
        gt=0,
        description="Trailing silence that ends a turn with the default SilenceEndOfTurn; "
        "shorter pauses stay inside the turn.",
    )
    pre_roll: float = Field(
        0.3,
        ge=0,
        description="Audio kept from before the detected onset, so STT hears the first "
        "syllable that the VAD only recognised a chunk or two late.",
    )
    max_utterance: float = Field(
        30.0,
        gt=0,
        description="Speech longer than this is cut into a turn of its own (reason "
        "'max_length'); Whisper-style STT handles at most 30 s at a time.",
    )
    emit_chunks: bool = Field(
        False,
        description="Emit SpeechChunk events while the user speaks, for streaming STT.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TurnOptions:
        if self.deactivation_threshold > self.activation_threshold:
            raise ValueError("deactivation_threshold must not exceed activation_threshold")
        if self.min_speech >= self.max_utterance:
            raise ValueError("min_speech must be shorter than max_utterance")
        return self


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """A turn is confirmed: `t` is when the speech began, `confirmed_at` is now (min_speech
    later). Barge-in reacts to this event, so a click never reaches it."""

    t: float
    confirmed_at: float


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """Audio of the current turn not sent before (the first one includes the pre-roll). The
    samples are a read-only view that stays valid after the turn ends."""

    audio: AudioFrame


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The turn is over at `t`. `audio` is the whole utterance from the pre-roll to `t` (its
    timestamp is where it starts); `speech_end` is when the last speech chunk ended, the moment
    latency metrics measure from."""

    t: float
    audio: AudioFrame
    started: float
    speech_end: float
    reason: Literal["silence", "max_length", "flush"]


GateEvent = SpeechStarted | SpeechChunk | SpeechEnded


class GateState(Enum):
    SILENT = "silent"
    PENDING = "pending"  # speech heard, not long enough yet to be a turn
    SPEAKING = "speaking"


_NO_EVENTS: tuple[GateEvent, ...] = ()


class SpeechGate:
    """One caller's VAD stream plus the turn-taking state machine on top of it.

    Feed 16 kHz mono PCM16 frames of any size to `push`; they are cut into the VAD's chunk size
    through a preallocated block, so 20 ms telephony frames and a VAD wanting 32 ms chunks meet
    without copies beyond the one into the block. The VAD model is shared; the gate opens its
    own stream on it.

    With `on_events` and a batching VAD, events come through `on_events` instead of `push`'s
    result (see the module doc); `flush` settles the windows still waiting first, and `close`
    drops them.
    """

    def __init__(
        self,
        vad: VAD,
        options: TurnOptions | None = None,
        *,
        end_of_turn: EndOfTurnStrategy | None = None,
        on_events: Callable[[Sequence[GateEvent]], None] | None = None,
    ) -> None:
        self.options = options or TurnOptions()
        self.end_of_turn: EndOfTurnStrategy = end_of_turn or SilenceEndOfTurn(
            self.options.end_of_turn_silence
        )
        self.sample_rate = vad.sample_rate
        self.probability = 0.0  # of the last VAD chunk, for debugging and metrics
        rate = self.sample_rate
        self._batched: BatchedVADStream | None = None
        if on_events is not None and isinstance(vad, BatchingVAD):
            self._batched = vad.batched_stream(self._decided)
        self._vad = vad.stream() if self._batched is None else None
        self._on_events = on_events
        self._waiting: deque[npt.NDArray[np.int16]] = deque()  # windows the VAD has not answered
        self._chunk = vad.chunk_samples
        self._activation = self.options.activation_threshold
        self._deactivation = self.options.deactivation_threshold
        self._min_speech = round(self.options.min_speech * rate)
        self._max_utterance = round(self.options.max_utterance * rate)
        self._pre_roll = round(self.options.pre_roll * rate)
        self._emit_chunks = self.options.emit_chunks
        self._block = np.zeros(self._chunk, dtype=np.int16)
        self._filled = 0
        self._history = SampleRing(self._pre_roll)
        self._recording = Recording(
            initial=self._pre_roll + rate,
            limit=self._pre_roll + self._max_utterance + self._chunk,
        )
        self._state = GateState.SILENT
        self._samples = 0  # samples through the VAD: the gate's clock
        self._fresh_from = 0  # pre-roll never reaches back into the previous turn
        self._rec_start = 0  # clock position of the recording's first sample
        self._onset = 0
        self._voiced = 0  # continuous speech while PENDING
        self._silence = 0  # trailing silence while SPEAKING
        self._last_voice = 0
        self._emitted = 0  # recording samples already sent as SpeechChunk
        self._out: list[GateEvent] = []  # reused: events of the current push

    @property
    def user_speaking(self) -> bool:
        return self._state is GateState.SPEAKING

    @property
    def state(self) -> GateState:
        return self._state

    @property
    def time(self) -> float:
        """Seconds of audio processed so far."""
        return self._samples / self.sample_rate

    @property
    def batched(self) -> bool:
        """Windows go to a batching VAD and events to `on_events`."""
        return self._batched is not None

    @property
    def pending(self) -> int:
        """Windows handed to a batching VAD and not answered yet."""
        return len(self._waiting)

    def push(self, pcm: npt.NDArray[np.int16]) -> Sequence[GateEvent]:
        """Feeds one frame of mono PCM16 at the VAD's rate (16 kHz); returns the events it
        completed, usually none (always none when batched: they go to `on_events`). The samples
        are copied out before this returns, so the caller may reuse its buffer."""
        out = self._out
        out.clear()
        size = self._chunk
        count = pcm.shape[0]
        start = 0
        if self._filled:
            start = min(size - self._filled, count)
            self._block[self._filled : self._filled + start] = pcm[:start]
            self._filled += start
            if self._filled < size:
                return _NO_EVENTS
            self._filled = 0
            self._window(self._block)
        whole = start + (count - start) // size * size
        for offset in range(start, whole, size):
            self._window(pcm[offset : offset + size])
        self._filled = count - whole
        self._block[: self._filled] = pcm[whole:]
        if not out:
            return _NO_EVENTS
        events = tuple(out)
        out.clear()
        return events

    def flush(self) -> Sequence[GateEvent]:
        """The audio stream ended: a turn in progress ends now with what was said; unconfirmed
        speech is dropped. Windows a batching VAD has not answered yet are answered first (their
        events go to `on_events`)."""
        if self._batched is not None:
            self._batched.settle()
        events: list[GateEvent] = self._out
        events.clear()
        partial = self._block[: self._filled]
        if self._state is GateState.SPEAKING:
            self._recording.append(partial)
        self._samples += self._filled
        self._filled = 0
        if self._state is GateState.SPEAKING:
            if self._emit_chunks:
                self._emit_chunk()
            self._finish("flush")
        self._state = GateState.SILENT
        result = tuple(events)
        events.clear()
        return result

    def reset(self) -> None:
        """Forgets the audio and the turn in progress (no events) and restarts the VAD state.
        The clock keeps running."""
        self._samples += self._filled + len(self._waiting) * self._chunk
        self._waiting.clear()
        self._filled = 0
        self._state = GateState.SILENT
        self._history.clear()
        self._fresh_from = self._samples
        if self._batched is not None:
            self._batched.reset()
        if self._vad is not None:
            self._vad.reset()

    def close(self) -> None:
        """The caller left: windows still waiting for a batching VAD are dropped, unanswered."""
        if self._batched is not None:
            self._batched.close()
        self._waiting.clear()

    def _window(self, chunk: npt.NDArray[np.int16]) -> None:
        if self._vad is not None:
            self._step(chunk, self._vad.process(chunk))
            return
        assert self._batched is not None
        self._waiting.append(chunk.copy())  # before submit: a full queue answers inside it
        self._batched.submit(chunk)

    def _decided(self, probability: float) -> None:
        """A batching VAD's answer for the oldest waiting window."""
        if not self._waiting:  # reset or closed since: nothing to decide
            return
        self._step(self._waiting.popleft(), probability)
        out = self._out
        if out and self._on_events is not None:
            events = tuple(out)
            out.clear()
            self._on_events(events)

    def _step(self, chunk: npt.NDArray[np.int16], probability: float) -> None:
        self.probability = probability
        begin = self._samples
        end = self._samples = begin + chunk.shape[0]
        state = self._state
        if state is GateState.SILENT:
            if probability >= self._activation:
                self._begin_candidate(begin)
                self._recording.append(chunk)
                self._voiced = chunk.shape[0]
                state = self._state = GateState.PENDING
        elif state is GateState.PENDING:
            self._recording.append(chunk)
            if probability >= self._deactivation:
                self._voiced += chunk.shape[0]
            else:
                state = self._state = GateState.SILENT
        else:
            self._recording.append(chunk)
            if probability >= self._deactivation:
                self._silence = 0
                self._last_voice = end
            else:
                self._silence += chunk.shape[0]
        if state is GateState.PENDING and self._voiced >= self._min_speech:
            state = self._state = GateState.SPEAKING
            self._silence = 0
            self._last_voice = end
            self.end_of_turn.reset()
            self._out.append(SpeechStarted(self._onset / self.sample_rate, end / self.sample_rate))
        if state is GateState.SPEAKING:
            if self._emit_chunks:
                self._emit_chunk()
            if self._silence and self.end_of_turn.is_complete(self._silence / self.sample_rate):
                self._finish("silence")
            elif end - self._onset >= self._max_utterance:
                self._finish("max_length")
        self._history.write(chunk)

    def _begin_candidate(self, onset: int) -> None:
        self._onset = onset
        self._recording.start()
        pre_roll = min(self._pre_roll, onset - self._fresh_from)
        for part in self._history.latest(pre_roll):
            self._recording.append(part)
        self._rec_start = onset - min(pre_roll, self._history.size)
        self._emitted = 0

    def _emit_chunk(self) -> None:
        length = self._recording.length
        if length > self._emitted:
            pcm = self._recording.view(self._emitted, length)
            at = (self._rec_start + self._emitted) / self.sample_rate
            self._out.append(SpeechChunk(AudioFrame(pcm, self.sample_rate, at)))
            self._emitted = length

    def _finish(self, reason: Literal["silence", "max_length", "flush"]) -> None:
        rate = self.sample_rate
        audio = AudioFrame(
            self._recording.view(0, self._recording.length), rate, self._rec_start / rate
        )
        self._out.append(
            SpeechEnded(
                self._samples / rate, audio, self._onset / rate, self._last_voice / rate, reason
            )
        )
        self._state = GateState.SILENT
        self._fresh_from = self._samples
