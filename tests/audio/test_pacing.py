"""The pacer on virtual time: exact deadlines, no drift, instant cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from voxline.audio.clock import VirtualClock
from voxline.audio.frames import AudioFrame
from voxline.audio.pacing import Pacer

RATE = 16000
FRAME = 320


async def source(
    chunks: Sequence[np.ndarray], clock: VirtualClock | None = None, gaps: Sequence[float] = ()
) -> AsyncIterator[np.ndarray]:
    for index, chunk in enumerate(chunks):
        if clock is not None and index < len(gaps) and gaps[index]:
            await clock.timer(clock.now() + gaps[index])
        yield chunk


class Recorder:
    def __init__(self, pacer: Pacer, clock: VirtualClock) -> None:
        self.frames: list[AudioFrame] = []
        self.times: list[float] = []
        self._pacer = pacer
        self._clock = clock

    async def consume(self, chunks: AsyncIterator[np.ndarray]) -> None:
        async for frame in self._pacer.pace(chunks):
            self.frames.append(frame)
            self.times.append(self._clock.now())


async def test_frames_leave_at_exact_deadlines_with_uneven_input() -> None:
    clock = VirtualClock(start=100.0)
    pacer = Pacer(RATE, clock=clock)
    recorder = Recorder(pacer, clock)
    pcm = np.arange(3000, dtype=np.int16)
    task = asyncio.create_task(recorder.consume(source([pcm[:500], pcm[500:2500], pcm[2500:]])))
    await clock.advance(1.0)
    await task
    assert [len(frame.pcm) for frame in recorder.frames] == [FRAME] * 10
    assert recorder.times == pytest.approx([100.0 + 0.02 * k for k in range(10)])
    assert [frame.timestamp for frame in recorder.frames] == pytest.approx(
        [0.02 * k for k in range(10)]
    )
    played = np.concatenate([frame.pcm for frame in recorder.frames])
    np.testing.assert_array_equal(played[:3000], pcm)
    assert not played[3000:].any()  # the last frame is padded with silence
    assert pacer.frames_sent == 10 and pacer.underruns == 0


class LateClock(VirtualClock):
    """Every wake-up comes 5 ms late, like a busy event loop."""

    def timer(self, deadline: float) -> asyncio.Future[None]:
        return super().timer(deadline + 0.005)


async def test_late_wakeups_do_not_accumulate_into_drift() -> None:
    clock = LateClock()
    recorder = Recorder(Pacer(RATE, clock=clock), clock)
    task = asyncio.create_task(recorder.consume(source([np.zeros(FRAME * 50, dtype=np.int16)])))
    await clock.advance(2.0)
    await task
    # Sleeping 20 ms after each frame would put frame 49 at 49 * 25 ms = 1.225 s.
    assert recorder.times[0] == 0.0
    assert recorder.times[1:] == pytest.approx([0.02 * k + 0.005 for k in range(1, 50)])


async def test_cancel_stops_at_once_without_waiting_for_the_next_deadline() -> None:
    clock = VirtualClock()
    pacer = Pacer(RATE, clock=clock)
    recorder = Recorder(pacer, clock)
    task = asyncio.create_task(recorder.consume(source([np.zeros(RATE, dtype=np.int16)])))
    await clock.advance(0.05)
    assert len(recorder.frames) == 3
    pacer.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert task.done()  # the clock did not move: the pending wait was ended by cancel()
    assert len(recorder.frames) == 3 and pacer.cancelled
    assert clock.pending == 0


async def test_no_frame_is_yielded_after_cancel_even_between_frames() -> None:
    clock = VirtualClock()
    pacer = Pacer(RATE, clock=clock, lead=1.0)  # everything is due at once
    frames = []
    async for frame in pacer.pace(source([np.zeros(FRAME * 10, dtype=np.int16)])):
        frames.append(frame)
        if len(frames) == 2:
            pacer.cancel()
    assert len(frames) == 2


async def test_lead_sends_the_first_frames_early() -> None:
    clock = VirtualClock()
    recorder = Recorder(Pacer(RATE, clock=clock, lead=0.06), clock)
    task = asyncio.create_task(recorder.consume(source([np.zeros(FRAME * 8, dtype=np.int16)])))
    await clock.advance(1.0)
    await task
    assert recorder.times == pytest.approx([0, 0, 0, 0, 0.02, 0.04, 0.06, 0.08])


async def test_a_stalled_source_restarts_the_schedule_instead_of_bursting() -> None:
    clock = VirtualClock()
    pacer = Pacer(RATE, clock=clock)
    recorder = Recorder(pacer, clock)
    chunks = [np.zeros(FRAME * 2, dtype=np.int16)] * 2
    task = asyncio.create_task(recorder.consume(source(chunks, clock, gaps=[0.05, 0.2])))
    await clock.advance(1.0)
    await task
    # Waiting 50 ms for the first audio is not an underrun; the 200 ms stall is.
    assert recorder.times == pytest.approx([0.05, 0.07, 0.27, 0.29])
    assert pacer.underruns == 1


async def test_frame_size_follows_the_sample_rate() -> None:
    pacer = Pacer(22050, clock=VirtualClock(), lead=10.0)
    frames = [frame async for frame in pacer.pace(source([np.zeros(1000, dtype=np.int16)]))]
    assert pacer.frame_samples == 441
    assert [len(frame.pcm) for frame in frames] == [441, 441, 441]
    assert all(frame.sample_rate == 22050 for frame in frames)
