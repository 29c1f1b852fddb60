"""Scripted providers on a virtual clock, and a harness that feeds a call frame by frame.

Caller audio is `marked_audio`: every sample holds the index of its 10 ms VAD chunk, so the
scripted STT can tell exactly which stretch of the call it was given and returns the words
"spoken" inside it, as a real recogniser would for the speech so far.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tests.audio.scripted_vad import RATE, ScriptedVAD, marked_audio, script
from voxline import Agent, Session
from voxline.audio.clock import VirtualClock, sleep_until
from voxline.audio.frames import AudioFrame
from voxline.providers.llm.base import LLMEvent, LLMRequest
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.providers.stt.base import PCM16, Transcript
from voxline.providers.tts.base import AudioChunk
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.voice import VoiceOptions, VoicePipeline

CHUNK = 160  # samples per scripted VAD chunk (10 ms)
FRAME = 320  # samples per inbound frame (20 ms)
SECONDS_PER_CHAR = 0.05  # how long the fake TTS takes to "say" one character


class ClockedLLM:
    """`FakeLLM`'s script, with its time to first token and token delays on a virtual clock."""

    def __init__(self, replies: Sequence[FakeReply], clock: VirtualClock) -> None:
        self.label = "fake"
        self._clock = clock
        self._delays = [(r.ttft, r.token_delay) for r in replies]
        self._inner = FakeLLM([replace(r, ttft=0.0, token_delay=0.0) for r in replies])
        self.requests = self._inner.requests
        self.cancelled = 0

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        ttft, delay = self._delays.pop(0) if self._delays else (0.0, 0.0)
        wait = ttft
        try:
            async for event in self._inner.stream(request):
                if wait:
                    await sleep_until(self._clock, self._clock.now() + wait)
                wait = delay
                yield event
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def aclose(self) -> None:
        return None


class SilenceTTS:
    """Speaks `SECONDS_PER_CHAR` of silence per character, after `delay` on the clock."""

    label = "silence"
    sample_rate = RATE

    def __init__(self, clock: VirtualClock, delay: float = 0.05) -> None:
        self._clock = clock
        self.delay = delay
        self.texts: list[str] = []
        self.cancelled = 0
        self.mute: dict[str, float] = {}  # text -> seconds after which its stream ends, silent

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        self.texts.append(text)
        try:
            await sleep_until(self._clock, self._clock.now() + self.mute.get(text, self.delay))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if text in self.mute:
            return
        samples = round(len(text) * SECONDS_PER_CHAR * self.sample_rate)
        yield AudioChunk(np.zeros(samples, dtype=np.int16), self.sample_rate, text)


def speech_seconds(text: str) -> float:
    return round(len(text) * SECONDS_PER_CHAR * RATE) / RATE


class ScriptedSTT:
    """Returns the scripted words that lie wholly inside the audio it is given."""

    label = "scripted"
    sample_rate = RATE

    def __init__(
        self, clock: VirtualClock, words: Sequence[tuple[float, float, str]], delay: float = 0.1
    ) -> None:
        self._clock = clock
        self.words = list(words)
        self.delay = delay
        self.calls: list[tuple[float, float]] = []  # (from, to) seconds of call audio given

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        first, last = int(pcm.min()), int(pcm.max())
        begin, end = first * CHUNK / RATE, (last + 1) * CHUNK / RATE
        self.calls.append((begin, end))
        await sleep_until(self._clock, self._clock.now() + self.delay)
        said = [w for start, stop, w in self.words if start >= begin - 1e-9 and stop <= end + 1e-9]
        return Transcript(" ".join(said), audio_duration=len(pcm) / RATE)


@dataclass
class Sent:
    at: float  # clock time the frame was handed over
    frame: AudioFrame


@dataclass
class RecordingTransport:
    """Plays nothing; records every frame with the clock time it was sent, and each clear."""

    clock: VirtualClock
    input_rate: int = RATE
    output_rate: int = RATE
    reports_playback: bool = False
    sent: list[Sent] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)

    async def send(self, frame: AudioFrame) -> None:
        self.sent.append(Sent(self.clock.now(), frame))

    def clear(self) -> None:
        self.clears.append(self.clock.now())

    def sent_between(self, start: float, end: float) -> list[Sent]:
        return [s for s in self.sent if start <= s.at < end]


class Call:
    """One simulated call: a session on scripted providers, fed 20 ms frames on virtual time."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        vad: Sequence[tuple[float, float]],
        words: Sequence[tuple[float, float, str]],
        replies: Sequence[FakeReply],
        tools: Sequence[Any] = (),
        turn: dict[str, Any] | None = None,
        options: VoiceOptions | None = None,
        stt_delay: float = 0.1,
    ) -> None:
        self.clock = VirtualClock()
        probabilities = script(*vad)
        self.audio = marked_audio(len(probabilities) + 400)
        self.vad = ScriptedVAD(probabilities)
        self.stt = ScriptedSTT(self.clock, words, stt_delay)
        self.tts = SilenceTTS(self.clock)
        self.llm = ClockedLLM(replies, self.clock)
        self.transport = RecordingTransport(self.clock)
        agent = Agent(name="tester", tools=list(tools), turn=turn or {})  # type: ignore[arg-type]
        self.session = Session(
            agent, llm=self.llm, store=store, settings=settings, channel="voice", auto_deliver=False
        )
        self.pipeline = VoicePipeline(
            self.session,
            self.transport,
            stt=self.stt,
            tts=self.tts,
            vad=self.vad,
            clock=self.clock,
            options=options,
        )
        self.metrics: list[Any] = []
        self.session.on("metrics", lambda kind, metrics: self.metrics.append((kind, metrics)))
        self._fed = 0

    async def start(self) -> None:
        await self.session.start(greet=False)

    async def run(self, seconds: float) -> None:
        """Feed the next `seconds` of caller audio in 20 ms frames, letting time pass."""
        for _ in range(round(seconds / 0.02)):
            self.pipeline.push_audio(self.audio[self._fed : self._fed + FRAME])
            self._fed += FRAME
            await self.clock.advance(0.02)

    async def close(self) -> None:
        await self.pipeline.close()
        await self.session.close()

    def turn_metrics(self) -> list[Any]:
        return [m for kind, m in self.metrics if kind == "turn"]
