"""`voxline simulate`: play a recorded caller into an agent and record what the agent says.

The recording is streamed through the same `VoicePipeline` a phone call uses, 20 ms at a time,
and the bot's audio is laid on the call's timeline (silence where the bot was silent), so the
output WAV sounds like the agent's side of the call, timing included.

In real time (the default) the printed latencies are what a caller would experience. `--fast`
runs the call on a virtual clock that stands still while a model computes: it finishes as fast
as the models allow and its audio shows the conversation without model delays, so its printed
latencies count only the pipeline's own waits (end-of-turn silence, pacing).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxline.agents.runtime import AgentRuntime
from voxline.audio.clock import Clock, MonotonicClock, VirtualClock, sleep_until
from voxline.audio.frames import AudioFrame
from voxline.conversation.session import Session
from voxline.conversation.turns import BotTurn, ToolCallTurn, UserTurn
from voxline.providers.llm.base import LLM
from voxline.settings import Settings
from voxline.store.sql import SqlStore
from voxline.voice.metrics import STAGES, LatencySummary, TurnLatency
from voxline.voice.pipeline import VoiceOptions, VoicePipeline
from voxline.voice.providers import SpeechProviders

FRAME = 0.02
POLL = 0.005  # seconds between checks while waiting on model work


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
    speech: SpeechProviders,
    *,
    settings: Settings,
    llm: LLM | None = None,
    fast: bool = False,
    greet: bool = False,
    max_tail: float = 60.0,
    options: VoiceOptions | None = None,
) -> SimulationResult:
    """Stream `caller` (any rate) through a fresh session with `agent`; wait for the agent to
    finish speaking (at most `max_tail` seconds after the recording ends)."""
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
