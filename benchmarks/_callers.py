"""What both frameworks are fed and how their frame timings are collected.

Every simulated caller sends the same 8 kHz mu-law audio, 20 ms per frame, on a real-time
schedule: mostly quiet line noise, with a spoken stretch once per cycle. Callers start at
different points of the cycle so turns are spread over the run instead of arriving together.
The scripted VAD reports speech exactly over the spoken stretch of its own caller's cycle, so
both frameworks see the same turns whether or not a real model listens.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxline.audio.codecs import mulaw_encode
from voxline.audio.resample import resample
from voxline.audio.wav import read_wav

FRAME_SECONDS = 0.02
INPUT_RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
VAD_RATE = 16000
VAD_CHUNK = 512  # samples per VAD window in both frameworks (Silero's 32 ms at 16 kHz)
SPEECH_START = 1.0  # seconds into each cycle where the caller starts talking
SPOKEN_LINE = "Could you check the weather in Paris for tomorrow, please?"


@dataclass(frozen=True)
class Script:
    """One cycle of caller audio and where its speech lies."""

    frames: list[bytes]
    cycle: float  # seconds
    speech: float  # seconds of speech per cycle, from SPEECH_START; 0: the caller never talks

    def probabilities(self) -> list[float]:
        """The scripted VAD's answer for each 32 ms window of one cycle."""
        windows = round(self.cycle * VAD_RATE / VAD_CHUNK)
        times = np.arange(windows) * VAD_CHUNK / VAD_RATE
        talking = (times >= SPEECH_START) & (times < SPEECH_START + self.speech)
        return [0.95 if t else 0.02 for t in talking]


def spoken_line() -> npt.NDArray[np.int16] | None:
    """A real utterance from espeak-ng at 8 kHz, so a real VAD has speech to find."""
    if shutil.which("espeak-ng") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "line.wav"
        subprocess.run(["espeak-ng", "-w", str(path), SPOKEN_LINE], check=True, capture_output=True)
        voice = read_wav(path)
    return resample(voice.pcm, voice.sample_rate, INPUT_RATE)


def caller_script(turn_every: float) -> Script:
    """`turn_every` seconds of audio per cycle with one utterance in it (0: no speech at all).

    The utterance is espeak-ng's when installed, else speech-shaped loud noise (which only the
    scripted VAD takes for speech); the rest is line noise at about -60 dBFS.
    """
    cycle = turn_every if turn_every > 0 else 10.0
    rng = np.random.default_rng(7)
    samples = round(cycle * INPUT_RATE)
    pcm = rng.normal(0.0, 30.0, samples)
    speech = 0.0
    if turn_every > 0:
        voice = spoken_line()
        if voice is None:
            length = round(2.5 * INPUT_RATE)
            syllables = np.sin(np.arange(length) * 2 * np.pi * 4 / INPUT_RATE) > -0.3
            voice = (rng.normal(0.0, 6000.0, length) * syllables).astype(np.int16)
        start = round(SPEECH_START * INPUT_RATE)
        if start + len(voice) > samples - INPUT_RATE:  # keep a second of silence after it
            raise ValueError(f"--turn-every must be at least {len(voice) / INPUT_RATE + 2:.1f} s")
        pcm[start : start + len(voice)] += voice
        speech = len(voice) / INPUT_RATE
    payload = mulaw_encode(np.clip(pcm, -32768, 32767).astype(np.int16))
    frames = [payload[i : i + FRAME_BYTES] for i in range(0, len(payload), FRAME_BYTES)]
    return Script(frames, cycle, speech)


@dataclass
class Timings:
    """Lateness of every frame whose deadline fell in the measured window, in seconds."""

    window_start: float = float("inf")  # loop time; frames due earlier are warm-up
    window_end: float = float("inf")
    lateness: list[float] = field(default_factory=list)

    def record(self, deadline: float, done: float) -> None:
        if self.window_start <= deadline < self.window_end:
            self.lateness.append(done - deadline)


Push = Callable[[bytes, float], Awaitable[None]]
"""Hands one mu-law frame, due at the given loop time, to a framework."""


async def feed(push: Push, script: Script, phase: int, first_deadline: float, stop: float) -> None:
    """One caller: a frame every 20 ms until the loop time `stop`, starting `phase` frames into
    the cycle. A caller that wakes late sends the frames it owes at once, as a socket that
    buffered them would deliver them, so falling behind shows as growing lateness."""
    loop = asyncio.get_running_loop()
    frames = script.frames
    index = phase
    deadline = first_deadline
    while deadline < stop:
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await push(frames[index % len(frames)], deadline)
        index += 1
        deadline += FRAME_SECONDS


@dataclass(frozen=True)
class RunResult:
    """One framework at one concurrency, as the parent process prints it."""

    framework: str
    sessions: int
    wall: float  # seconds measured
    cpu: float  # process CPU seconds in that window, all threads
    frames: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    turns: int  # replies produced, to show both frameworks really took turns

    @property
    def core_share(self) -> float:
        """Fraction of one core the whole process used."""
        return self.cpu / self.wall

    @property
    def per_session(self) -> float:
        """Percent of one core per session."""
        return self.core_share / self.sessions * 100


async def drive(
    pushes: list[Push], script: Script, timings: Timings, *, warmup: float, seconds: float
) -> tuple[float, float]:
    """Runs one caller per push for `warmup + seconds`; returns (wall, CPU) seconds of the
    measured window. Callers start spread over one frame period and over the cycle, as
    independent calls would be."""
    loop = asyncio.get_running_loop()
    count = len(pushes)
    origin = loop.time() + 0.1
    timings.window_start = origin + warmup
    timings.window_end = timings.window_start + seconds
    stop = timings.window_end + FRAME_SECONDS
    callers = [
        asyncio.create_task(feed(push, script, phase, origin + i * FRAME_SECONDS / count, stop))
        for i, (push, phase) in enumerate(zip(pushes, phases(script, count), strict=True))
    ]
    await asyncio.sleep(timings.window_start - loop.time())
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.sleep(timings.window_end - loop.time())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await asyncio.gather(*callers)
    return wall, cpu


def summarise(
    framework: str, sessions: int, wall: float, cpu: float, timings: Timings, turns: int
) -> RunResult:
    late = np.array(timings.lateness) * 1000 if timings.lateness else np.zeros(1)
    return RunResult(
        framework,
        sessions,
        wall,
        cpu,
        len(timings.lateness),
        float(np.percentile(late, 50)),
        float(np.percentile(late, 99)),
        float(late.max()),
        turns,
    )


class ScriptedVoice:
    """A scripted VAD stream for one caller: speech exactly over the cycle's spoken stretch,
    read from the window where the caller's phase starts. Costs one list index per window,
    so the benchmark measures the framework around the VAD, not a model."""

    def __init__(self, script: Script, phase: int) -> None:
        self._probabilities = script.probabilities()
        self._index = round(phase * FRAME_SECONDS * VAD_RATE / VAD_CHUNK)

    def process(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> float:
        probability = self._probabilities[self._index % len(self._probabilities)]
        self._index += 1
        return probability

    def reset(self) -> None:
        """The caller's audio goes on, so the script keeps its place."""


def phases(script: Script, count: int) -> list[int]:
    """Where in the cycle each of `count` callers starts, spread evenly."""
    return [i * len(script.frames) // count for i in range(count)]
