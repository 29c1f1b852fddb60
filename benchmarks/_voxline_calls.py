"""N voxline calls: a Session on FakeLLM behind a VoicePipeline, with instant STT and TTS.

Each caller's frame is decoded from mu-law at the channel edge and handed to
`VoicePipeline.push_audio`, which resamples it and cuts it into VAD windows inline. With the
scripted VAD (or Silero run inline) the gate decides inline too, so a frame is done when the
call returns. With batched Silero the windows wait for a batch of many calls' windows, which may
compute on the VAD's worker thread (`voxline.providers.vad.batch`): such a frame counts as done
only when every window it completed has been answered and its gate has decided. `TimedVAD` sees
that moment: it wraps each call's Silero stream and counts windows submitted and answered.
Replies are spoken through a transport that discards the frames: the pipeline still resamples
and paces them at real time, as it would for a phone.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from _callers import Push, RunResult, Script, ScriptedVoice, Timings, drive, phases, summarise
from voxline import Agent, Session
from voxline.audio.codecs import mulaw_decode
from voxline.audio.frames import AudioFrame
from voxline.providers.factory import create_vad
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.providers.stt.base import PCM16, Transcript
from voxline.providers.tts.base import AudioChunk
from voxline.providers.vad.base import VAD, BatchedVADStream, VADStream
from voxline.providers.vad.silero import GATHER_FROM, SileroVAD
from voxline.store.sql import SqlStore
from voxline.voice import VoicePipeline

REPLY = "Sure, one moment."
# soxr's "HQ" stream resampler (both frameworks use it for 8 -> 16 kHz) holds its output back
# and releases ~104 ms (5-6 frames) at once. Calls that all start within one frame period, as
# the benchmark's do, would release their audio to the VAD in the same 20 ms, every 104 ms;
# on a real server calls started at unrelated moments. Before the run each call is fed 0-5
# frames (its index modulo 6), so their bursts fall at different moments. Not measured.
RESAMPLER_PHASES = 6
GATHER_MS: float | None = None  # --gather-ms: override how long a Silero batch may wait
UNBATCHED = False  # --unbatched: every call runs Silero inline, as before batching
MAX_BATCH: int | None = None  # --max-batch: override the windows per Silero inference
WORKER_FROM: int | None = None  # --worker-from: override the batch size run off the loop
TTS_RATE = 16000
SPEECH_SECONDS_PER_CHAR = 0.05


class InstantSTT:
    label = "instant"
    sample_rate = 16000

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        return Transcript("What's the weather tomorrow?", audio_duration=len(pcm) / 16000)


class InstantTTS:
    """Silence as long as the text would take to say, at once."""

    label = "instant"
    sample_rate = TTS_RATE

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        samples = round(len(text) * SPEECH_SECONDS_PER_CHAR * TTS_RATE)
        yield AudioChunk(np.zeros(samples, dtype=np.int16), TTS_RATE, text)


class ScriptedVAD:
    """Hands the gate the caller's own scripted stream."""

    label = "scripted"
    sample_rate = 16000
    chunk_samples = 512

    def __init__(self, voice: ScriptedVoice) -> None:
        self._voice = voice

    def stream(self) -> VADStream:
        return self._voice


class TimedVAD:
    """One call's view of a shared Silero model that tells when a frame's windows are decided.

    The gate opens its batched stream through `batched_stream`; the wrapper counts the windows
    it submits and the answers that come back (after the gate has stepped on each). `track`,
    called right after a frame's push submitted windows, calls `on_done(token)` once every
    window submitted so far is answered (at once when they already are)."""

    def __init__(self, model: SileroVAD, on_done: Callable[[float], None]) -> None:
        self.label = model.label
        self.sample_rate = model.sample_rate
        self.chunk_samples = model.chunk_samples
        self._model = model
        self._on_done = on_done
        self.submitted = 0
        self.answered = 0
        self._frames: deque[tuple[float, int]] = deque()  # (token, windows it waits for)

    def stream(self) -> VADStream:
        return self._model.stream()

    def batched_stream(self, on_probability: Callable[[float], None]) -> BatchedVADStream | None:
        def answered(probability: float) -> None:
            on_probability(probability)
            self.answered += 1
            self._settled()

        inner = self._model.batched_stream(answered)
        return None if inner is None else _CountingStream(inner, self)

    def track(self, token: float) -> None:
        """Call right after a push that submitted windows."""
        if self.submitted > self.answered:
            self._frames.append((token, self.submitted))
        else:
            self._on_done(token)

    def dropped(self) -> None:
        """The stream was reset or closed: its waiting windows are done with."""
        self.answered = self.submitted
        self._settled()

    def _settled(self) -> None:
        frames = self._frames
        while frames and frames[0][1] <= self.answered:
            self._on_done(frames.popleft()[0])


class _CountingStream:
    """A batched stream that tells its `TimedVAD` about each window submitted or dropped."""

    def __init__(self, inner: BatchedVADStream, timed: TimedVAD) -> None:
        self._inner = inner
        self._timed = timed

    @property
    def pending(self) -> int:
        return self._inner.pending

    def submit(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> None:
        self._timed.submitted += 1
        self._inner.submit(chunk)

    def settle(self) -> None:
        self._inner.settle()

    def reset(self) -> None:
        self._inner.reset()
        self._timed.dropped()

    def close(self) -> None:
        self._inner.close()
        self._timed.dropped()


@dataclass
class DiscardingTransport:
    """A phone line whose far end plays instantly and says nothing back."""

    input_rate: int = 8000
    output_rate: int = 8000
    reports_playback: bool = False

    async def send(self, frame: AudioFrame) -> None:
        return None

    def clear(self) -> None:
        return None


async def run_voxline(
    sessions: int, script: Script, vad_kind: str, *, warmup: float, seconds: float
) -> RunResult:
    loop = asyncio.get_running_loop()
    timings = Timings()
    silero: VAD | None = create_vad("silero") if vad_kind == "silero" else None
    if isinstance(silero, SileroVAD):
        if GATHER_MS is not None:
            silero.schedulers.set_gather(GATHER_MS / 1000, GATHER_FROM)
        silero.schedulers.configure(max_batch=MAX_BATCH, worker_from=WORKER_FROM)
        if UNBATCHED:
            silero.batchable = False

    def decided(deadline: float) -> None:
        timings.record(deadline, loop.time())

    with tempfile.TemporaryDirectory() as folder:
        store = SqlStore(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")
        await store.open()
        agent = Agent(name="bench")
        calls: list[tuple[Session, VoicePipeline, TimedVAD | None]] = []
        for phase in phases(script, sessions):
            session = Session(
                agent,
                llm=FakeLLM(default=FakeReply(text=REPLY)),
                store=store,
                channel="voice",
                auto_deliver=False,
            )
            timed = TimedVAD(silero, decided) if isinstance(silero, SileroVAD) else None
            vad = timed or ScriptedVAD(ScriptedVoice(script, phase))
            pipeline = VoicePipeline(
                session, DiscardingTransport(), stt=InstantSTT(), tts=InstantTTS(), vad=vad
            )
            await session.start(greet=False)
            calls.append((session, pipeline, timed))

        def pusher(pipeline: VoicePipeline, timed: TimedVAD | None) -> Push:
            async def push(payload: bytes, deadline: float) -> None:
                before = timed.submitted if timed is not None else 0
                pipeline.push_audio(mulaw_decode(payload))
                if timed is not None and timed.submitted > before:
                    timed.track(deadline)  # done when its windows' batch is answered
                else:  # no window completed (or decided inline): its work is done
                    timings.record(deadline, loop.time())

            return push

        for index, (_, pipeline, _) in enumerate(calls):  # see `RESAMPLER_PHASES`
            for frame in script.frames[: index % RESAMPLER_PHASES]:
                pipeline.push_audio(mulaw_decode(frame))
        pushes = [pusher(pipeline, timed) for _, pipeline, timed in calls]
        loop_cpu, cpu0 = time.thread_time(), time.process_time()
        wall, cpu = await drive(pushes, script, timings, warmup=warmup, seconds=seconds)
        loop_cpu, all_cpu = time.thread_time() - loop_cpu, time.process_time() - cpu0
        if isinstance(silero, SileroVAD):
            stats = silero.batch_stats()
            print(
                f"# VAD batches: {stats.inferences} inferences, {stats.windows} windows, "
                f"mean {stats.mean_batch:.1f}, largest {stats.largest}, on the worker "
                f"{stats.threaded}, overflows {stats.overflows}, loop waited {stats.waits}, "
                f"batched {sum(p.listener.gate.batched for _, p, _ in calls)}/{len(calls)} calls; "
                f"event-loop thread {loop_cpu / all_cpu:.0%} of the process CPU",
                flush=True,
            )
        turns = 0
        for session, pipeline, _ in calls:
            turns += (await pipeline.close()).turns
            await session.close()
        await store.close()
    if isinstance(silero, SileroVAD):
        silero.close()
    return summarise("voxline", sessions, wall, cpu, timings, turns)
