"""N Pipecat calls doing the same work per frame as voxline's, built the lean way.

Each call is a `PipelineWorker` on its own `WorkerRunner`, as Pipecat's examples run one bot per
call, with RTVI, turn tracking and the idle timeout switched off (they are on by default and
only add work). The pipeline:

    TelephonyDecoder -> VADProcessor -> STT -> LLM -> TTS -> FrameSink

`TelephonyDecoder` stands in for the transport's input side: Pipecat's own `ulaw_to_pcm` (what
`TwilioFrameSerializer` calls) with its soxr stream resampler at the same "HQ" quality voxline
uses. `VADProcessor` is Pipecat's, with its stock `SileroVADAnalyzer` or the scripted analyzer
below. STT, LLM and TTS pass every frame on and answer instantly: a transcript when the user
stops speaking, one reply text for a transcript, silence as long as voxline's for a text.
`FrameSink` stands in for the output transport; with no transport, nothing plays replies out.

A frame counts as processed when both the VAD has analysed it and it reached the sink:
`VADProcessor` forwards a frame before analysing it, so either can come last.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any

import numpy as np
from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
from pipecat.audio.utils import ulaw_to_pcm
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    SystemFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from _callers import (
    INPUT_RATE,
    VAD_RATE,
    Push,
    RunResult,
    Script,
    ScriptedVoice,
    Timings,
    drive,
    phases,
    summarise,
)
from _voxline_calls import REPLY, RESAMPLER_PHASES, SPEECH_SECONDS_PER_CHAR

TIMING = "bench_timing"


class _Pending:
    """A frame's deadline, recorded once its last piece of work is done."""

    __slots__ = ("deadline", "remaining", "timings")

    def __init__(self, deadline: float, timings: Timings) -> None:
        self.deadline = deadline
        self.timings = timings
        self.remaining = 2  # the VAD's analysis and the arrival at the sink

    def done(self) -> None:
        self.remaining -= 1
        if not self.remaining:
            self.timings.record(self.deadline, asyncio.get_running_loop().time())


def _finish(frame: Frame) -> None:
    pending = frame.metadata.get(TIMING)
    if isinstance(pending, _Pending):
        pending.done()


@dataclass
class MulawFrame(SystemFrame):
    """One 20 ms telephony frame as it comes off the wire, with its due time."""

    payload: bytes
    pending: _Pending


class TelephonyDecoder(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self._resampler = SOXRStreamAudioResampler(quality="HQ", clear_after_secs=None)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, MulawFrame):
            pcm = await ulaw_to_pcm(frame.payload, INPUT_RATE, VAD_RATE, self._resampler)
            audio = InputAudioRawFrame(audio=pcm, sample_rate=VAD_RATE, num_channels=1)
            audio.metadata[TIMING] = frame.pending
            await self.push_frame(audio, direction)
        else:
            await self.push_frame(frame, direction)


class TimedVADProcessor(VADProcessor):
    """Pipecat's VADProcessor, telling the frame's timing when its analysis is done."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        _finish(frame)


class ScriptedAnalyzer(VADAnalyzer):
    """Pipecat's analyzer machinery (thread hop, volume gate, state machine) around the
    scripted caller's voice instead of a model."""

    def __init__(self, voice: ScriptedVoice) -> None:
        super().__init__(sample_rate=VAD_RATE)
        self._voice = voice

    def num_frames_required(self) -> int:
        return 512

    def voice_confidence(self, buffer: bytes) -> float:
        return self._voice.process(np.frombuffer(buffer, dtype=np.int16))


class InstantSTT(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            now = datetime.datetime.now(datetime.UTC).isoformat()
            await self.push_frame(TranscriptionFrame("What's the weather tomorrow?", "caller", now))


class InstantLLM(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            await self.push_frame(LLMTextFrame(REPLY))
            await self.push_frame(LLMFullResponseEndFrame())


class InstantTTS(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            samples = round(len(frame.text) * SPEECH_SECONDS_PER_CHAR * VAD_RATE)
            await self.push_frame(TTSStartedFrame())
            audio = np.zeros(samples, dtype=np.int16).tobytes()
            await self.push_frame(TTSAudioRawFrame(audio, VAD_RATE, 1))
            await self.push_frame(TTSStoppedFrame())


class FrameSink(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.replies = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            _finish(frame)
        elif isinstance(frame, TTSAudioRawFrame):
            self.replies += 1
        await self.push_frame(frame, direction)


class PipecatCall:
    def __init__(self, analyzer: VADAnalyzer, timings: Timings) -> None:
        self.timings = timings
        self.sink = FrameSink()
        pipeline = Pipeline(
            [
                TelephonyDecoder(),
                TimedVADProcessor(vad_analyzer=analyzer),
                InstantSTT(),
                InstantLLM(),
                InstantTTS(),
                self.sink,
            ]
        )
        self.worker = PipelineWorker(
            pipeline,
            params=PipelineParams(audio_in_sample_rate=VAD_RATE),
            enable_rtvi=False,
            enable_turn_tracking=False,
            idle_timeout_secs=None,
            check_dangling_tasks=False,
        )
        self.started = asyncio.Event()
        self.worker.add_event_handler("on_pipeline_started", self._started)
        self.runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        self._run: asyncio.Task[None] | None = None

    async def _started(self, worker: Any, frame: Frame) -> None:
        self.started.set()

    async def start(self) -> None:
        await self.runner.add_workers(self.worker)
        self._run = asyncio.create_task(self.runner.run())
        await self.started.wait()

    async def push(self, payload: bytes, deadline: float) -> None:
        await self.worker.queue_frame(MulawFrame(payload, _Pending(deadline, self.timings)))

    async def stop(self) -> None:
        await self.runner.cancel()
        if self._run is not None:
            await self._run


async def _drained(timings: Timings, *, quiet: float = 0.2, limit: float = 10.0) -> None:
    """Waits for frames still inside the pipelines: an overloaded run finishes late ones
    after the callers stop, and leaving them out would hide how late they were."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + limit
    seen = -1
    while seen != len(timings.lateness) and loop.time() < give_up:
        seen = len(timings.lateness)
        await asyncio.sleep(quiet)


async def run_pipecat(
    sessions: int, script: Script, vad_kind: str, *, warmup: float, seconds: float
) -> RunResult:
    timings = Timings()
    calls = []
    for phase in phases(script, sessions):
        analyzer: VADAnalyzer = (
            SileroVADAnalyzer()
            if vad_kind == "silero"
            else ScriptedAnalyzer(ScriptedVoice(script, phase))
        )
        call = PipecatCall(analyzer, timings)
        await call.start()
        calls.append(call)
    for index, call in enumerate(calls):  # the same resampler phases as voxline's calls
        for frame in script.frames[: index % RESAMPLER_PHASES]:
            await call.push(frame, float("-inf"))  # due before the measured window: not timed
    pushes: list[Push] = [call.push for call in calls]
    wall, cpu = await drive(pushes, script, timings, warmup=warmup, seconds=seconds)
    await _drained(timings)
    turns = sum(call.sink.replies for call in calls)
    for call in calls:
        await call.stop()
    return summarise("pipecat", sessions, wall, cpu, timings, turns)
