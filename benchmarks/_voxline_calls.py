"""N voxline calls: a Session on FakeLLM behind a VoicePipeline, with instant STT and TTS.

Each caller's frame is decoded from mu-law at the channel edge and handed to
`VoicePipeline.push_audio`, which resamples it and cuts it into VAD windows inline. With the
scripted VAD the gate decides inline too, so a frame is done when the call returns. With Silero
the windows of every call handled in the same loop turn run as one batched inference at the
start of the next turn (`voxline.providers.vad.batch`): such a frame counts as done only when
that batch has run and its gate has decided, timed by a callback queued behind the batch.
Replies are spoken through a transport that discards the frames: the pipeline still resamples
and paces them at real time, as it would for a phone.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _callers import Push, RunResult, Script, ScriptedVoice, Timings, drive, phases, summarise
from voxline import Agent, Session
from voxline.audio.codecs import mulaw_decode
from voxline.audio.frames import AudioFrame
from voxline.providers.factory import create_vad
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.providers.stt.base import PCM16, Transcript
from voxline.providers.tts.base import AudioChunk
from voxline.providers.vad.base import VAD, VADStream
from voxline.providers.vad.silero import GATHER_FROM, SileroVAD
from voxline.store.sql import SqlStore
from voxline.voice import VoicePipeline

REPLY = "Sure, one moment."
GATHER_MS: float | None = None  # --gather-ms: override how long a Silero batch may wait
UNBATCHED = False  # --unbatched: every call runs Silero inline, as before batching
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
    if isinstance(silero, SileroVAD) and GATHER_MS is not None:
        silero.schedulers.set_gather(GATHER_MS / 1000, GATHER_FROM)
    if isinstance(silero, SileroVAD) and UNBATCHED:
        silero.batchable = False
    with tempfile.TemporaryDirectory() as folder:
        store = SqlStore(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")
        await store.open()
        agent = Agent(name="bench")
        calls: list[tuple[Session, VoicePipeline]] = []
        for phase in phases(script, sessions):
            session = Session(
                agent,
                llm=FakeLLM(default=FakeReply(text=REPLY)),
                store=store,
                channel="voice",
                auto_deliver=False,
            )
            vad = silero or ScriptedVAD(ScriptedVoice(script, phase))
            pipeline = VoicePipeline(
                session, DiscardingTransport(), stt=InstantSTT(), tts=InstantTTS(), vad=vad
            )
            await session.start(greet=False)
            calls.append((session, pipeline))

        def pusher(pipeline: VoicePipeline) -> Push:
            gate = pipeline.listener.gate

            def decided(deadline: float) -> None:
                timings.record(deadline, loop.time())

            async def push(payload: bytes, deadline: float) -> None:
                pipeline.push_audio(mulaw_decode(payload))
                if gate.pending:  # queued behind the batch that answers this frame's window
                    loop.call_soon(decided, deadline)
                else:
                    timings.record(deadline, loop.time())

            return push

        wall, cpu = await drive(
            [pusher(p) for _, p in calls], script, timings, warmup=warmup, seconds=seconds
        )
        if isinstance(silero, SileroVAD):
            stats = silero.batch_stats()
            print(
                f"# VAD batches: {stats.inferences} inferences, {stats.windows} windows, "
                f"mean {stats.mean_batch:.1f}, largest {stats.largest}, "
                f"overflows {stats.overflows}, batched "
                f"{sum(p.listener.gate.batched for _, p in calls)}/{len(calls)} calls",
                flush=True,
            )
        turns = 0
        for session, pipeline in calls:
            turns += (await pipeline.close()).turns
            await session.close()
        await store.close()
    return summarise("voxline", sessions, wall, cpu, timings, turns)
