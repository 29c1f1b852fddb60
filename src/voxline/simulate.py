"""`voxline simulate`: play a recorded caller into an agent and record what the agent says.

The recording is streamed through the same `VoicePipeline` a phone call uses, 20 ms at a time,
and the bot's audio is laid on the call's timeline (silence where the bot was silent), so the
output WAV sounds like the agent's side of the call, timing included.

In real time (the default) the printed latencies are what a caller would experience. `--fast`
runs the call on a virtual clock that stands still while a model computes: it finishes as fast
as the models allow and its audio shows the conversation without model delays, so its printed
latencies count only the pipeline's own waits (end-of-turn silence, pacing).

An agent whose `llm` is a Realtime model is heard and spoken by that model instead
(`RealtimeLine`): the recording goes to it as PCM16 at 24 kHz, 20 ms every 20 ms, and the
model's audio is played out of a buffer in real time, 20 ms a tick, onto the same timeline, so
a barge-in cuts it where the caller would have stopped hearing it. Such a call runs in real
time only (the model's clock is not ours). `voxline talk` runs the same line on the sound card.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxline.agents.runtime import AgentRuntime, agent_spec_of
from voxline.audio.clock import Clock, MonotonicClock, VirtualClock, sleep_until
from voxline.audio.frames import AudioFrame
from voxline.audio.resample import StreamResampler, resample
from voxline.conversation.session import Session
from voxline.conversation.turns import BotTurn, ToolCallTurn, UserTurn
from voxline.providers.llm.base import LLM, ConfigurationError, LLMError
from voxline.providers.realtime.client import RealtimeConnectError
from voxline.providers.realtime.config import PCM24
from voxline.providers.realtime.registry import realtime_part
from voxline.settings import Settings
from voxline.store.sql import SqlStore
from voxline.voice.metrics import STAGES, LatencySummary, TurnLatency, summarize
from voxline.voice.pipeline import VoiceOptions, VoicePipeline
from voxline.voice.providers import SpeechProviders
from voxline.voice.realtime import RealtimeVoiceEngine

FRAME = 0.02
POLL = 0.005  # seconds between checks while waiting on model work
SETTLE = 1.0
"""Seconds of quiet (nothing said, nothing played) after the model's own end-of-turn wait that
end a Realtime simulation once the recording is over: it has answered everything."""


class TimelineTransport:
    """The far end of a simulated call: every frame the bot sends lands at the offset of the
    moment it was sent. Frames that follow each other within a frame are kept contiguous, so
    scheduling jitter does not cut clicks into the audio; a longer wait is silence."""

    reports_playback = False

    def __init__(self, input_rate: int, output_rate: int, clock: Clock) -> None:
        self.input_rate = input_rate
        self.output_rate = output_rate
        self.clock = clock
        self.clears = 0
        self._start = clock.now()
        self._pieces: list[tuple[int, npt.NDArray[np.int16]]] = []
        self._end = 0  # sample offset just past the last frame

    def begin(self) -> None:
        """The call starts now: offset zero of the timeline."""
        self._start = self.clock.now()

    async def send(self, frame: AudioFrame) -> None:
        offset = round((self.clock.now() - self._start) * self.output_rate)
        if offset - self._end < frame.num_samples:
            offset = self._end
        self._pieces.append((offset, frame.pcm.copy()))
        self._end = offset + frame.num_samples

    def clear(self) -> None:
        self.clears += 1  # frames play the moment they are sent: nothing is queued to drop

    def audio(self, seconds: float = 0.0) -> npt.NDArray[np.int16]:
        """The bot's side of the call, at least `seconds` long."""
        out = np.zeros(max(self._end, round(seconds * self.output_rate)), dtype=np.int16)
        for offset, pcm in self._pieces:
            out[offset : offset + len(pcm)] = pcm
        return out


@dataclass
class SimulationResult:
    transcript: list[tuple[str, str]]  # (speaker, text): "caller", "agent" or "tool"
    latencies: list[TurnLatency]
    summary: LatencySummary
    audio: npt.NDArray[np.int16]
    sample_rate: int
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, JSON arguments)


async def simulate_call(
    caller: AudioFrame,
    agent: AgentRuntime,
    speech: SpeechProviders | None,
    *,
    settings: Settings,
    llm: LLM | None = None,
    fast: bool = False,
    greet: bool = False,
    max_tail: float = 60.0,
    options: VoiceOptions | None = None,
) -> SimulationResult:
    """Stream `caller` (any rate) through a fresh session with `agent`; wait for the agent to
    finish speaking (at most `max_tail` seconds after the recording ends). An agent whose `llm`
    is a Realtime model (and no `llm` given here) runs on that model, which needs no `speech`;
    any other agent needs it."""
    realtime = realtime_part(agent_spec_of(agent).llm) if llm is None else None
    if realtime is not None:
        if fast:
            raise ConfigurationError(
                "--fast runs on virtual time, and a Realtime model runs in real time: "
                "simulate this agent without --fast"
            )
        return await simulate_realtime_call(
            caller, agent, realtime, settings=settings, greet=greet, max_tail=max_tail
        )
    if speech is None:
        raise ConfigurationError("a cascaded agent needs speech models to simulate a call")
    clock: Clock = VirtualClock() if fast else MonotonicClock()
    transport = TimelineTransport(caller.sample_rate, speech.tts.sample_rate, clock)
    with tempfile.TemporaryDirectory(prefix="voxline-simulate-") as scratch:
        store = SqlStore(f"sqlite+aiosqlite:///{Path(scratch) / 'call.db'}")
        await store.open()
        session = Session(
            agent, llm=llm, store=store, settings=settings, channel="simulate", auto_deliver=False
        )
        pipeline = VoicePipeline(
            session,
            transport,
            stt=speech.stt,
            tts=speech.tts,
            vad=speech.vad,
            clock=clock,
            options=options,
        )
        try:
            await session.start(greet=False)
            await session.wait_idle()  # the model is warm before the call connects
            transport.begin()
            if greet and session.spec.greeting:
                await session.say(session.spec.greeting)
            await _play(caller, pipeline, clock)
            pipeline.end_input()
            await _drain(pipeline, clock, max_tail)
            summary = await pipeline.close()
            result = SimulationResult(
                transcript=_transcript(session),
                latencies=list(pipeline.latencies),
                summary=summary,
                audio=transport.audio(caller.duration),
                sample_rate=transport.output_rate,
                tool_calls=[
                    (t.name, t.arguments) for t in session.turns if isinstance(t, ToolCallTurn)
                ],
            )
        finally:
            await pipeline.close()
            await session.close()
            await store.close()
    return result


async def _play(caller: AudioFrame, pipeline: VoicePipeline, clock: Clock) -> None:
    size = max(1, round(caller.sample_rate * FRAME))
    start = clock.now()
    for offset in range(0, caller.num_samples, size):
        pipeline.push_audio(caller.pcm[offset : offset + size])
        await _tick(pipeline, clock, start + (offset + size) / caller.sample_rate)


async def _drain(pipeline: VoicePipeline, clock: Clock, max_tail: float) -> None:
    deadline = clock.now() + max_tail
    while not pipeline.idle and clock.now() < deadline:
        await _tick(pipeline, clock, clock.now() + FRAME)


async def _tick(pipeline: VoicePipeline, clock: Clock, until: float) -> None:
    if isinstance(clock, VirtualClock):
        # Model time does not pass on the virtual timeline. `busy` gathers work from threads,
        # tasks and queues with no single event to wait on, so it is polled.
        while pipeline.busy:  # noqa: ASYNC110
            await asyncio.sleep(POLL)
        await clock.advance(max(0.0, until - clock.now()))
    else:
        await sleep_until(clock, until)


def _transcript(session: Session) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for turn in session.turns:
        if isinstance(turn, UserTurn):
            lines.append(("caller", turn.content))
        elif isinstance(turn, BotTurn) and turn.content:
            lines.append(("agent", turn.content + (" [interrupted]" if turn.interrupted else "")))
        elif isinstance(turn, ToolCallTurn):
            lines.append(("tool", f"{turn.name}({turn.arguments})"))
    return lines


def render(result: SimulationResult, *, fast: bool = False) -> str:
    """The transcript, then one latency line per turn and the p50/max summary."""
    lines = [f"{who:>6}: {text}" for who, text in result.transcript]
    lines.append("")
    note = " (virtual time: model time not counted)" if fast else ""
    lines.append(f"latency per turn, ms{note}:")
    lines.append(_row("turn", ["eot", "stt", "llm", "tts", "v2v"]))
    for index, turn in enumerate(result.latencies, 1):
        values = list(turn.milliseconds().values())
        lines.append(_row(str(index), ["-" if v is None else str(v) for v in values]))
    summary = result.summary.milliseconds()
    for stat in ("p50", "max"):
        lines.append(_row(stat, [str(summary[s][stat]) if s in summary else "-" for s in STAGES]))
    return "\n".join(lines)


def _row(label: str, cells: Sequence[str]) -> str:
    return f"{label:>6}" + "".join(f"{cell:>8}" for cell in cells)


# -- Realtime (speech-to-speech) agents -----------------------------------------------------------
class PlayoutPort:
    """`RealtimeAudioOut` for a far end that plays in real time from a buffer: a sound card, or
    the ear of a simulated caller. The model's audio (PCM16 at 24 kHz) is resampled to the
    output rate and queued; whoever plays takes the next samples with `take` (silence when
    nothing is queued), which is what counts as heard, per item. `clear()` empties the buffer
    at once (barge-in). Safe to take from another thread (PortAudio's callback); `on_idle`
    then runs on that thread, so it must hop back to the event loop itself."""

    def __init__(
        self,
        output_rate: int,
        *,
        model_rate: int = PCM24.rate,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.output_rate = output_rate
        self.on_idle = on_idle
        self._resampler = StreamResampler(model_rate, output_rate)
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, npt.NDArray[np.int16], float]] = deque()
        self._offset = 0  # samples of the queue's head already played
        self._played: dict[str, float] = {}  # item -> model bytes played

    @property
    def playing(self) -> bool:
        with self._lock:
            return bool(self._queue)

    def play(self, item_id: str, audio: bytes) -> None:
        pcm = self._resampler.process(np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2"))
        if len(pcm):
            with self._lock:
                self._queue.append((item_id, pcm.astype(np.int16), len(audio) / len(pcm)))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._offset = 0
        self._resampler.reset()

    def played_bytes(self, item_id: str) -> int:
        with self._lock:
            return int(self._played.get(item_id, 0.0))

    def take(self, samples: int) -> npt.NDArray[np.int16]:
        """The next `samples` samples to play (padded with silence), now counted as heard."""
        out = np.zeros(samples, dtype=np.int16)
        filled = 0
        with self._lock:
            was_playing = bool(self._queue)
            while filled < samples and self._queue:
                item_id, pcm, per_sample = self._queue[0]
                take = min(samples - filled, len(pcm) - self._offset)
                out[filled : filled + take] = pcm[self._offset : self._offset + take]
                filled += take
                self._offset += take
                self._played[item_id] = self._played.get(item_id, 0.0) + take * per_sample
                if self._offset == len(pcm):
                    self._queue.popleft()
                    self._offset = 0
            idle = was_playing and not self._queue
        if idle and self.on_idle is not None:
            self.on_idle()
        return out


class RealtimeLine:
    """A Realtime agent on a line that plays in real time: the session, the model's engine,
    the caller's audio resampled on its way in (`hear`, one soxr stream), and the model's audio
    queued to be taken out (`port.take`). `voxline simulate` takes it on its own clock,
    `voxline talk` in the sound card's callback."""

    engine: RealtimeVoiceEngine  # made by `start`, on the started session

    def __init__(self, session: Session, spec: str, *, input_rate: int, output_rate: int) -> None:
        self.session = session
        self.spec = spec
        self.failed = asyncio.Event()  # the model was lost for good
        self.port = PlayoutPort(output_rate, on_idle=self._played_out)
        self._inbound = StreamResampler(input_rate, PCM24.rate)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False

    async def start(self, *, greet: bool) -> None:
        """Start the session, connect the model and have it greet (`greet`, a new caller).
        Raises `LLMError` when the model cannot be reached: one line for the command."""
        self._loop = asyncio.get_running_loop()
        await self.session.start(greet=False)
        self.engine = RealtimeVoiceEngine(
            self.session, self.spec, self.port, audio=PCM24, on_failed=self.failed.set
        )
        self._started = True
        try:
            await self.engine.start()
        except RealtimeConnectError as exc:
            raise LLMError(f"the Realtime model cannot be reached: {exc}") from None
        greeting = self.session.spec.greeting
        if greet and greeting and not len(self.session.turns):
            self.engine.greet(greeting)

    def hear(self, pcm: npt.NDArray[np.int16]) -> None:
        """Caller audio at the line's input rate."""
        audio = self._inbound.process(pcm)
        if len(audio):
            self.engine.push_audio(audio.astype("<i2", copy=False).tobytes())

    @property
    def quiet(self) -> bool:
        """Nothing is being said, played or run."""
        return not self.engine.bot_active

    async def close(self) -> LatencySummary:
        summary = await self.engine.close() if self._started else summarize([])
        await self.session.close()
        return summary

    def _played_out(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.engine.playback_finished)


async def simulate_realtime_call(
    caller: AudioFrame,
    agent: AgentRuntime,
    spec: str,
    *,
    settings: Settings,
    greet: bool = False,
    max_tail: float = 60.0,
) -> SimulationResult:
    """`simulate_call` for an agent on a Realtime model (`spec`): in real time, 20 ms a tick,
    caller audio in and the model's audio out on one timeline; after the recording the line
    stays open (silence in) until the model has said and played everything."""
    pcm = resample(caller.pcm, caller.sample_rate, PCM24.rate)
    step = round(PCM24.rate * FRAME)
    clock = MonotonicClock()
    with tempfile.TemporaryDirectory(prefix="voxline-simulate-") as scratch:
        store = SqlStore(f"sqlite+aiosqlite:///{Path(scratch) / 'call.db'}")
        await store.open()
        session = Session(agent, store=store, settings=settings, channel="simulate")
        line = RealtimeLine(session, spec, input_rate=PCM24.rate, output_rate=PCM24.rate)
        out: list[npt.NDArray[np.int16]] = []
        try:
            await line.start(greet=greet)
            wait = line.engine.config.silence_duration_ms / 1000 + SETTLE
            start = clock.now()
            quiet_since: float | None = None
            tick = 0
            while not line.failed.is_set():
                now = start + tick * FRAME
                heard = pcm[tick * step : (tick + 1) * step]
                line.hear(heard if len(heard) else np.zeros(step, dtype=np.int16))
                out.append(line.port.take(step))
                tick += 1
                if len(heard) == 0:  # the recording is over: wait for the answers to end
                    quiet_since = None if not line.quiet else (quiet_since or now)
                    if (quiet_since is not None and now - quiet_since >= wait) or (
                        now - start - caller.duration >= max_tail
                    ):
                        break
                await sleep_until(clock, start + tick * FRAME)
        finally:
            summary = await line.close()
            await store.close()
    if line.failed.is_set():
        raise LLMError("the Realtime model was lost mid-call and could not be reached again")
    return SimulationResult(
        transcript=_transcript(session),
        latencies=list(line.engine.latency.latencies),
        summary=summary,
        audio=np.concatenate(out) if out else np.zeros(0, dtype=np.int16),
        sample_rate=PCM24.rate,
        tool_calls=[(t.name, t.arguments) for t in session.turns if isinstance(t, ToolCallTurn)],
    )
