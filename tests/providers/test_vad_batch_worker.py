"""Batched VAD off the event loop: big batches compute on the scheduler's worker thread.

The scheduler's rules are checked with a model whose compute can be held on a `threading.Event`
(what a batch does while it is in flight, and what happens to it when the stream or the
scheduler goes away); the real Silero model checks that answers computed on the worker thread,
in capped batches, are exactly the one-window-at-a-time answers per call. No test measures
speed: every wait on the worker is a hang guard with a generous timeout, not a timing claim.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.audio.test_silero_gate import RATE, room_noise
from tests.audio.test_vad_batch import Member
from voxline.providers.vad.batch import BatchScheduler
from voxline.providers.vad.silero import CHUNK_SAMPLES, SileroVAD

HANG_GUARD = 30.0  # seconds: only a broken scheduler ever waits this long
TOLERANCE = 1e-5


class HeldBatch:
    """Takes each member's oldest window; `compute` records its thread and, while the model
    holds it, waits for `release`; `finish` answers each window with itself."""

    def __init__(self, model: HeldModel, members: list[Member]) -> None:
        self.model = model
        self.members = members
        self.taken = [member.windows.pop(0) for member in members]

    def compute(self) -> None:
        self.model.threads.append(threading.get_ident())
        self.model.computing.set()
        if self.model.hold:
            assert self.model.release.wait(HANG_GUARD), "the test never released the batch"

    def finish(self) -> None:
        self.model.finished.append([member.name for member in self.members])
        for member, window in zip(self.members, self.taken, strict=True):
            member.answers.append(window)


class HeldModel:
    def __init__(self, *, hold: bool = False) -> None:
        self.hold = hold
        self.release = threading.Event()
        self.computing = threading.Event()
        self.batches: list[list[str]] = []
        self.finished: list[list[str]] = []
        self.threads: list[int] = []

    def __call__(self, members: list[Member]) -> HeldBatch:
        self.batches.append([member.name for member in members])
        return HeldBatch(self, members)


def scheduler_for(model: HeldModel, **settings: int) -> BatchScheduler[Member]:
    return BatchScheduler(model, loop=asyncio.get_running_loop(), **settings)


def queue_windows(scheduler: BatchScheduler[Member], names: str, window: int = 0) -> list[Member]:
    members = [Member(name) for name in names]
    for member in members:
        scheduler.attach(member)
        member.windows.append(window)
        scheduler.ready(member)
    return members


async def until(condition: object, *, turns: int = 10_000) -> None:
    """Lets the loop turn (and the worker finish) until `condition()` holds."""
    assert callable(condition)
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never held")


async def joined(thread: threading.Thread | None) -> None:
    assert thread is not None
    await asyncio.to_thread(thread.join, HANG_GUARD)
    assert not thread.is_alive()


async def test_big_batches_compute_on_the_worker_and_small_ones_inline() -> None:
    model = HeldModel()
    scheduler = scheduler_for(model, worker_from=3)
    loop_thread = threading.get_ident()
    big = queue_windows(scheduler, "abc")
    await until(lambda: all(member.answers for member in big))
    worker = scheduler.worker
    assert worker is not None and model.threads == [worker.ident] != [loop_thread]
    small = queue_windows(scheduler, "de")
    await asyncio.sleep(0)
    assert model.threads[1:] == [loop_thread]  # two windows: inline, at the next loop turn
    assert [member.answers for member in big + small] == [[0]] * 5
    assert scheduler.stats.threaded == 1 and scheduler.stats.inferences == 2
    for member in big + small:
        scheduler.detach(member)
    await joined(worker)  # the last stream out stops the thread
    assert scheduler.worker is None


async def test_the_loop_keeps_running_while_a_batch_computes() -> None:
    model = HeldModel(hold=True)
    scheduler = scheduler_for(model, worker_from=1)
    members = queue_windows(scheduler, "ab")
    await asyncio.to_thread(model.computing.wait, HANG_GUARD)
    turns = 0
    while turns < 5:  # the batch is held on the worker; the loop is free meanwhile
        await asyncio.sleep(0)
        turns += 1
    assert scheduler.in_flight and members[0].answers == []
    model.release.set()  # set from the loop: a blocked loop could never get here
    await until(lambda: members[1].answers == [0])
    assert model.finished == [["a", "b"]]
    scheduler.close()


async def test_windows_arriving_during_a_batch_form_the_next_capped_batches() -> None:
    model = HeldModel(hold=True)
    scheduler = scheduler_for(model, worker_from=1, max_batch=4)
    first = queue_windows(scheduler, "ab")
    await asyncio.to_thread(model.computing.wait, HANG_GUARD)
    later = queue_windows(scheduler, "cdefghijkl", window=1)  # ten calls while it computes
    first[0].windows.append(2)  # and a second window of a call in flight
    scheduler.ready(first[0])
    assert model.batches == [["a", "b"]]  # nothing else starts while one is in flight
    model.release.set()
    await until(lambda: all(member.answers for member in later) and len(first[0].answers) == 2)
    assert model.batches == [["a", "b"], list("cdef"), list("ghij"), ["k", "l", "a"]]
    assert first[0].answers == [0, 2] and [m.answers for m in later] == [[1]] * 10
    scheduler.close()


async def test_a_full_batch_does_not_wait_out_the_gather() -> None:
    model = HeldModel()
    loop = asyncio.get_running_loop()
    scheduler: BatchScheduler[Member] = BatchScheduler(
        model, loop=loop, gather=3600.0, gather_from=1, max_batch=3, worker_from=10
    )
    queue_windows(scheduler, "ab")
    await asyncio.sleep(0)
    assert model.batches == []  # two of three: waiting for more calls' windows
    queue_windows(scheduler, "c")
    await asyncio.sleep(0)
    assert model.batches == [["a", "b", "c"]]
    scheduler.close()


async def test_run_waits_for_the_batch_in_flight_then_answers_the_rest_in_order() -> None:
    model = HeldModel(hold=True)
    scheduler = scheduler_for(model, worker_from=1)
    (member,) = queue_windows(scheduler, "a", window=1)
    await asyncio.to_thread(model.computing.wait, HANG_GUARD)
    member.windows += [2, 3]
    scheduler.ready(member)
    threading.Timer(0.05, model.release.set).start()  # releases the held batch from elsewhere
    scheduler.run()  # blocks the loop until the worker's batch is done: `settle`'s promise
    assert member.answers == [1, 2, 3]
    assert scheduler.stats.waits == 1 and not scheduler.in_flight
    await asyncio.sleep(0.01)  # the worker's own completion callback arrives: nothing twice
    assert member.answers == [1, 2, 3] and len(model.finished) == 3
    scheduler.close()


async def test_close_while_a_batch_is_in_flight_neither_hangs_nor_delivers_nor_leaks() -> None:
    model = HeldModel(hold=True)
    scheduler = scheduler_for(model, worker_from=1)
    members = queue_windows(scheduler, "ab")
    await asyncio.to_thread(model.computing.wait, HANG_GUARD)
    worker = scheduler.worker
    scheduler.close()  # returns at once although the batch is held on the worker
    assert scheduler.worker is None and not scheduler.in_flight
    model.release.set()
    await joined(worker)
    await asyncio.sleep(0.01)  # the finished batch's callback reaches a closed scheduler
    assert model.finished == [] and [member.answers for member in members] == [[], []]
    with pytest.raises(RuntimeError):
        scheduler.ready(members[0])


# -- the real model on the worker ---------------------------------------------------------


def threaded_model(silero: SileroVAD, *, max_batch: int) -> SileroVAD:
    """The silero session, every batch of two or more on the worker, at most `max_batch`."""
    return SileroVAD(silero._session, max_batch=max_batch, worker_from=2, gather=0.0)


def calls(count: int) -> list[npt.NDArray[np.int16]]:
    """`count` calls of 1 s, each its own noise and a loud burst at its own moment."""
    out = []
    for index in range(count):
        audio = room_noise(1.0, seed=100 + index)
        start = 2000 + 700 * index
        burst = np.random.default_rng(index).normal(0, 6000, 4000)
        audio[start : start + 4000] = np.clip(audio[start : start + 4000] + burst, -32768, 32767)
        out.append(audio)
    return out


def windows(audio: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
    return [audio[i : i + CHUNK_SAMPLES] for i in range(0, len(audio) - CHUNK_SAMPLES + 1, 512)]


def one_at_a_time(vad: SileroVAD, audio: npt.NDArray[np.int16]) -> list[float]:
    stream = vad.stream()
    return [stream.process(window) for window in windows(audio)]


async def test_threaded_capped_batches_equal_one_at_a_time_runs_per_call(
    silero: SileroVAD,
) -> None:
    vad = threaded_model(silero, max_batch=3)
    audio = calls(7)
    answers: list[list[float]] = [[] for _ in audio]
    streams = [vad.batched_stream(got.append) for got in answers]
    per_call = [windows(one) for one in audio]
    for step in range(len(per_call[0])):  # every call's window, then two loop turns
        for stream, its in zip(streams, per_call, strict=True):
            assert stream is not None
            stream.submit(its[step])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await until(lambda: all(stream is not None and stream.pending == 0 for stream in streams))
    stats = vad.batch_stats()
    assert stats.largest == 3 and stats.threaded > 0  # split at the cap, off the loop
    for one, got in zip(audio, answers, strict=True):
        assert np.max(np.abs(np.array(got) - np.array(one_at_a_time(silero, one)))) <= TOLERANCE
    worker = vad.schedulers.current().worker
    for stream in streams:
        assert stream is not None
        stream.close()
    await joined(worker)


class HeldSession:
    """The real session; while `hold` is set, each run waits for `release` first."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.hold = False
        self.running = threading.Event()
        self.release = threading.Event()

    def run(self, outputs: Any, feeds: dict[str, Any]) -> Any:
        if self.hold:
            self.running.set()
            assert self.release.wait(HANG_GUARD), "the test never released the run"
        return self.session.run(outputs, feeds)


async def test_a_reset_while_its_window_computes_keeps_the_fresh_state(silero: SileroVAD) -> None:
    session = HeldSession(silero._session)
    vad = SileroVAD(session, max_batch=8, worker_from=2, gather=0.0)
    audio = calls(3)
    answers: list[list[float]] = [[] for _ in audio]
    opened = [vad.batched_stream(got.append) for got in answers]
    streams = [stream for stream in opened if stream is not None]
    for step in range(10):  # ten windows each, answered: the states are far from fresh
        for stream, one in zip(streams, audio, strict=True):
            stream.submit(windows(one)[step])
        await until(lambda: all(stream.pending == 0 for stream in streams))
    session.hold = True
    for stream, one in zip(streams, audio, strict=True):
        stream.submit(windows(one)[10])
    await asyncio.to_thread(session.running.wait, HANG_GUARD)  # computing on the worker
    reset = streams[0]
    reset.reset()  # its window's answer and new state must not land when the batch returns
    session.hold = False
    session.release.set()
    await until(lambda: all(stream.pending == 0 for stream in streams[1:]))
    assert [len(got) for got in answers] == [10, 11, 11]
    rest = windows(audio[0])[11:20]
    for window in rest:
        reset.submit(window)
        await until(lambda: reset.pending == 0)
    fresh = vad.stream()
    expected = [fresh.process(window) for window in rest]
    assert np.max(np.abs(np.array(answers[0][10:]) - np.array(expected))) <= TOLERANCE
    for stream in streams:
        stream.close()
    vad.close()


async def test_closing_the_model_with_a_batch_in_flight_ends_the_worker(
    silero: SileroVAD,
) -> None:
    vad = threaded_model(silero, max_batch=64)
    got: list[float] = []
    streams = [vad.batched_stream(got.append) for _ in range(40)]
    window = windows(room_noise(0.1, seed=3))[0]
    for stream in streams:
        stream.submit(window)  # type: ignore[union-attr]
    await asyncio.sleep(0)  # dispatched to the worker
    scheduler = vad.schedulers.current()
    worker = scheduler.worker
    vad.close()
    await joined(worker)
    await asyncio.sleep(0.01)
    assert got == [] and scheduler.closed
    with pytest.raises(RuntimeError):  # its answer in flight is lost: it must not go on
        streams[0].submit(window)  # type: ignore[union-attr]
    fresh = vad.batched_stream(got.append)  # a new stream gets a new scheduler
    assert fresh is not None
    fresh.submit(window)
    await until(lambda: got != [])
    assert got == pytest.approx([vad.stream().process(window)], abs=TOLERANCE)
    fresh.close()
    for stream in streams:
        stream.close()  # type: ignore[union-attr]


def test_without_an_event_loop_big_batches_still_answer_inline(silero: SileroVAD) -> None:
    vad = threaded_model(silero, max_batch=4)
    got: list[Sequence[float]] = []
    stream = vad.batched_stream(lambda p: got.append([p]))
    assert stream is not None
    for window in windows(room_noise(0.2, seed=4)):
        stream.submit(window)
    assert len(got) == len(windows(room_noise(0.2, seed=4))) and stream.pending == 0
    assert vad.schedulers.current().worker is None
    assert RATE == 16000
