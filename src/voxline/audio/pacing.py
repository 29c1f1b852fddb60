"""Releases outbound audio at real-time pace, in fixed frames, stoppable between any two.

Channels buffer what they are sent (Twilio plays everything queued), so pushing a whole reply at
once would make barge-in useless: the caller would keep hearing audio that the engine has already
cancelled. Sending at the pace it plays keeps at most `lead` seconds in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

import numpy as np
import numpy.typing as npt

from voxline.audio.clock import Clock, MonotonicClock
from voxline.audio.frames import AudioFrame


class Pacer:
    """Cuts PCM16 into `frame_duration` frames and yields each when it is due.

    Deadlines are computed from the start of the run (`start + n * frame`), never by sleeping a
    frame's length after the previous one, so scheduling jitter does not add up into drift. If
    the source stalls long enough that the far end must have run dry, the schedule restarts from
    the present instead of bursting to catch up (counted in `underruns`). `lead` lets the first
    frames go out early to give the far end a small jitter buffer. The last partial frame of a
    run is padded with silence so every frame has the same size.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        frame_duration: float = 0.02,
        clock: Clock | None = None,
        lead: float = 0.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = max(1, round(sample_rate * frame_duration))
        self.frame_duration = self.frame_samples / sample_rate
        self.lead = lead
        self.clock: Clock = clock or MonotonicClock()
        self.frames_sent = 0
        self.underruns = 0
        self._cancelled = False
        self._timer: asyncio.Future[None] | None = None

    def pace(self, source: AsyncIterable[npt.NDArray[np.int16]]) -> AsyncIterator[AudioFrame]:
        """Frames of `source`, each released at its deadline. Frame timestamps are seconds of
        audio since the start of this run."""
        self._cancelled = False
        return self._run(source)

    def cancel(self) -> None:
        """Stops the current run: no frame is yielded after this call, and a wait for the next
        deadline ends at once. (A source that is itself blocked is its owner's to cancel.)"""
        self._cancelled = True
        if self._timer is not None and not self._timer.done():
            self._timer.set_result(None)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    async def _run(self, source: AsyncIterable[npt.NDArray[np.int16]]) -> AsyncIterator[AudioFrame]:
        size = self.frame_samples
        carry = np.zeros(size, dtype=np.int16)
        carried = 0
        schedule = _Schedule(self.frame_duration)
        async for pcm in source:
            start = 0
            if carried:
                start = min(size - carried, len(pcm))
                carry[carried : carried + start] = pcm[:start]
                carried += start
                if carried < size:
                    continue
                frame = carry.copy()  # the consumer may keep it; `carry` is reused
                carried = 0
                if not await self._wait(schedule):
                    return
                yield self._frame(frame, schedule)
            whole = start + (len(pcm) - start) // size * size
            for offset in range(start, whole, size):
                if not await self._wait(schedule):
                    return
                yield self._frame(pcm[offset : offset + size], schedule)
            carried = len(pcm) - whole
            carry[:carried] = pcm[whole:]
        if carried:
            carry[carried:] = 0
            if await self._wait(schedule):
                yield self._frame(carry.copy(), schedule)

    async def _wait(self, schedule: _Schedule) -> bool:
        """Sleeps until the next frame is due; False once the run is cancelled."""
        if self._cancelled:
            return False
        now = self.clock.now()
        if not schedule.started:
            schedule.restart(now)
        elif schedule.behind(now):
            schedule.restart(now)
            self.underruns += 1
        release = schedule.due - self.lead
        if release > now:
            self._timer = self.clock.timer(release)
            try:
                await self._timer
            finally:
                self._timer = None
        return not self._cancelled

    def _frame(self, pcm: npt.NDArray[np.int16], schedule: _Schedule) -> AudioFrame:
        frame = AudioFrame(pcm, self.sample_rate, schedule.released * self.frame_duration)
        schedule.advance()
        self.frames_sent += 1
        return frame


class _Schedule:
    """When each frame of a run is due at the far end: `anchor + index * frame`. The anchor is
    set by the first frame, so waiting for the first audio does not count as falling behind."""

    def __init__(self, frame: float) -> None:
        self.anchor = 0.0
        self.started = False
        self.frame = frame
        self.index = 0  # frames released since the anchor
        self.released = 0  # frames released in the run, for timestamps

    @property
    def due(self) -> float:
        return self.anchor + self.index * self.frame

    def behind(self, now: float) -> bool:
        # More than a whole frame late means the far end has played everything it had.
        return now > self.due + self.frame

    def restart(self, now: float) -> None:
        self.anchor = now
        self.started = True
        self.index = 0

    def advance(self) -> None:
        self.index += 1
        self.released += 1
