"""Call recordings: both sides of a voxline-pipeline call in one stereo WAV file.

The caller is on the left channel, the agent on the right, at 16 kHz, laid out on one clock so
that a barge-in sounds in the file as it did on the line: the caller's audio at the time it
arrived, the agent's at the time it was sent, and the agent's audio that was sent but then
cleared (a barge-in drops what the far end had not played yet) taken back out, so the file holds
what was played, not what was synthesised.

`RecordingTransport` wraps the channel's `AudioTransport`, so it sees every outbound frame and
every `clear()`; the pipeline hands it each inbound frame (`record_input`). Nothing here blocks
the audio path: frames are resampled (one soxr stream per side) and kept in memory for about
two seconds; older audio is final and is written by a background task in a worker thread, so
a slow disk never delays a frame. A file is a plain PCM WAV whose header is completed at close;
a process killed mid-call leaves a file whose header says 0 frames, which tools read as
"streamed" (voxline's own `read_wav` does).

Where files go: `Settings.data_dir / "recordings"`, then the agent's `recording.path` pattern
(`{agent}/{date}/{conversation}-{connection}.wav` by default) with each value reduced to safe
file-name characters and the result checked to stay inside that directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import wave
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import structlog

from voxline.audio.clock import Clock, MonotonicClock
from voxline.audio.frames import AudioFrame
from voxline.audio.resample import StreamResampler
from voxline.voice.transport import AudioTransport

if TYPE_CHECKING:
    from voxline.conversation.session import Session

log = structlog.get_logger("voxline.recorder")

RATE = 16_000
HOLD = 2 * RATE  # samples kept in memory behind "now": the agent's lead and a clear reach back
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
CALLER, AGENT = 0, 1

PCM = npt.NDArray[np.int16]


class _Track:
    """One side's audio as (position, samples) pieces in time order, not yet written."""

    def __init__(self) -> None:
        self.pieces: deque[tuple[int, PCM]] = deque()
        self.end = 0  # the position just after the last sample placed

    def place(self, at: int, pcm: PCM) -> None:
        if len(pcm):
            self.pieces.append((at, pcm))
            self.end = at + len(pcm)

    def cut(self, at: int) -> None:
        """Take back everything from `at` on."""
        while self.pieces and self.pieces[-1][0] >= at:
            self.pieces.pop()
        if self.pieces:
            start, pcm = self.pieces[-1]
            if start + len(pcm) > at:
                self.pieces[-1] = (start, pcm[: at - start])
        self.end = min(self.end, at)

    def take(self, into: PCM, start: int) -> None:
        """Move the audio of `[start, start + len(into))` into `into`; keep what is later."""
        stop = start + len(into)
        while self.pieces:
            at, pcm = self.pieces[0]
            if at >= stop:
                return
            first, last = max(at, start), min(at + len(pcm), stop)
            into[first - start : last - start] = pcm[first - at : last - at]
            if at + len(pcm) <= stop:
                self.pieces.popleft()
            else:
                self.pieces[0] = (stop, pcm[stop - at :])
                return


class _Side:
    """One side's resampler and track. Audio is laid out in stretches: a stretch starts where
    the clock says its first frame began, and its samples follow one another from there, so the
    resampler's start-up delay does not shift it; a gap on the clock starts a new stretch."""

    GAP = RATE // 10  # input this much behind the clock means the audio stopped meanwhile

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.resampler = StreamResampler(rate, RATE)
        self.track = _Track()
        self.origin: int | None = None  # where the current stretch begins
        self.taken = 0  # input samples of the current stretch
        self.produced = 0  # output samples of the current stretch

    def add(self, pcm: PCM, start: int, floor: int) -> None:
        """`pcm` began at position `start`; nothing is placed before `floor` (written)."""
        if self.origin is None or start > self.origin + self.taken * RATE // self.rate + self.GAP:
            self.end_stretch()
            self.origin, self.taken, self.produced = start, 0, 0
        out = self.resampler.process(pcm)
        self.taken += len(pcm)
        self.track.place(max(self.track.end, self.origin + self.produced, floor), out)
        self.produced += len(out)

    def end_stretch(self) -> None:
        if self.origin is not None:
            self.track.place(self.track.end, self.resampler.flush())
        self.origin = None

    def drop_after(self, at: int) -> None:
        self.resampler.reset()
        self.origin = None
        self.track.cut(at)


class CallRecorder:
    """Records one call into `path`. `input_rate` / `output_rate`: the transport's rates."""

    def __init__(
        self, path: Path, *, input_rate: int, output_rate: int, clock: Clock | None = None
    ) -> None:
        self.path = path
        self.clock: Clock = clock or MonotonicClock()
        self._start = self.clock.now()
        self._sides = (_Side(input_rate), _Side(output_rate))  # caller, agent
        self._written = 0  # samples per channel handed to the writer
        self._chunks: deque[bytes] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._wav: wave.Wave_write | None = None
        self._closed = False
        self.failed = False

    def _now(self) -> int:
        return round((self.clock.now() - self._start) * RATE)

    # -- audio in ----------------------------------------------------------------------------
    def caller(self, pcm: PCM) -> None:
        """An inbound frame, just received (it ended now)."""
        if self._closed:
            return
        side = self._sides[CALLER]
        side.add(pcm, self._now() - len(pcm) * RATE // side.rate, self._written)
        self._maybe_flush()

    def agent(self, frame: AudioFrame) -> None:
        """An outbound frame, sent now: it plays from now, after what is still queued."""
        if self._closed:
            return
        self._sides[AGENT].add(frame.pcm, self._now(), self._written)
        self._maybe_flush()

    def agent_cleared(self) -> None:
        """The channel dropped what it had not played: it never reached the caller."""
        if self._closed:
            return
        self._sides[AGENT].drop_after(max(self._now(), self._written))

    # -- writing -----------------------------------------------------------------------------
    def _maybe_flush(self) -> None:
        horizon = self._now() - HOLD
        if horizon - self._written >= RATE:
            self._flush(horizon)

    def _flush(self, until: int) -> None:
        count = until - self._written
        if count <= 0:
            return
        stereo = np.zeros((count, 2), dtype=np.int16)
        for channel, side in enumerate(self._sides):
            samples = np.zeros(count, dtype=np.int16)
            side.track.take(samples, self._written)
            stereo[:, channel] = samples
        self._written = until
        self._chunks.append(stereo.astype("<i2", copy=False).tobytes())
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._chunks:
            chunk = self._chunks.popleft()
            if self.failed:
                continue
            try:
                await asyncio.to_thread(self._write, chunk)
            except OSError as exc:
                self.failed = True
                log.error("call recording failed", path=str(self.path), error=str(exc))

    def _write(self, chunk: bytes) -> None:
        if self._wav is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - closed in close()
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(RATE)
            self._wav = wav
        self._wav.writeframesraw(chunk)

    async def close(self) -> None:
        """Write what is left (both sides to their last sample) and complete the file."""
        if self._closed:
            return
        self._closed = True
        for side in self._sides:
            side.end_stretch()
        self._flush(max(*(side.track.end for side in self._sides), self._written))
        if self._writer is not None:
            await self._writer
        if self._wav is not None:
            wav, self._wav = self._wav, None
            with contextlib.suppress(OSError):
                await asyncio.to_thread(wav.close)
        log.info("call recorded", path=str(self.path), seconds=round(self._written / RATE, 2))


class RecordingTransport:
    """An `AudioTransport` that records what passes through it (see the module doc)."""

    def __init__(self, inner: AudioTransport, recorder: CallRecorder) -> None:
        self.inner = inner
        self.recorder = recorder
        self.input_rate = inner.input_rate
        self.output_rate = inner.output_rate
        self.reports_playback = inner.reports_playback
        self._last_input: PCM | None = None

    async def send(self, frame: AudioFrame) -> None:
        self.recorder.agent(frame)
        await self.inner.send(frame)

    def clear(self) -> None:
        self.inner.clear()
        self.recorder.agent_cleared()

    def record_input(self, pcm: PCM) -> None:
        """The caller's frame; the same frame handed in twice in a row (a channel and the
        pipeline both hooked) is recorded once."""
        if pcm is not self._last_input:
            self._last_input = pcm
            self.recorder.caller(pcm)


def recording_path(session: Session, *, at: float | None = None) -> Path:
    """Where `session`'s recording goes (see the module doc); never outside the directory."""
    base = (session.settings.data_dir / "recordings").resolve()
    day = time.strftime("%Y-%m-%d", time.gmtime(at if at is not None else time.time()))
    values = {
        "agent": session.spec.name,
        "date": day,
        "conversation": session.id,
        "connection": session.connection_id,
    }
    safe = {key: _UNSAFE.sub("_", value).strip(".") or "_" for key, value in values.items()}
    path = (base / session.spec.recording.path.format(**safe)).resolve()
    if not path.is_relative_to(base):
        raise ValueError(f"recording path {path} is outside {base}")
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def record_call(
    session: Session, transport: AudioTransport, clock: Clock | None = None
) -> AudioTransport:
    """`transport`, recording when the session's agent asks for it (`recording.enabled`); the
    recording is completed by `close_recording` or, failing that, when the session closes."""
    if not session.spec.recording.enabled or isinstance(transport, RecordingTransport):
        return transport
    recorder = CallRecorder(
        recording_path(session),
        input_rate=transport.input_rate,
        output_rate=transport.output_rate,
        clock=clock,
    )
    session.on("session_closed", lambda **_: recorder.close())
    log.info("recording the call", path=str(recorder.path), session_id=session.id)
    return RecordingTransport(transport, recorder)


def record_input(transport: AudioTransport, pcm: PCM) -> None:
    """The pipeline's inbound hook: the caller's frame, to the recording if there is one."""
    if isinstance(transport, RecordingTransport):
        transport.record_input(pcm)


async def close_recording(transport: AudioTransport) -> None:
    """The pipeline's close hook: complete the recording, if there is one."""
    if isinstance(transport, RecordingTransport):
        await transport.recorder.close()
