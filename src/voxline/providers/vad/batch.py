"""One VAD inference for many calls' waiting windows, off the event loop when it is big.

Why: on a server with many calls the VAD is most of a listening call's CPU, and most of one
Silero run is fixed cost (the ONNX Runtime call, small matrix products that use the core
badly). The same model run over a batch of windows costs about half as much per window from 8
windows on (`benchmarks/pipeline_overhead.py` prints the curve). But one inference over 100
windows takes ~6 ms, and run on the event loop it holds every other call's frames that long.

How: a stream's `submit` queues its window and tells the `BatchScheduler`. A batch is built on
the loop (`prepare`: one window from each waiting stream, at most `max_batch` streams), its
model run (`Batch.compute`) goes to the scheduler's own worker thread when it holds at least
`worker_from` windows (ONNX Runtime releases the GIL, so the loop keeps taking frames while it
runs), and its answers are delivered back on the loop (`Batch.finish`). Small batches (a lone
call, a quiet server) run inline at the next loop turn, as fast as an unbatched call: a thread
hand-off would cost more than the run.

One batch is in flight at a time. Windows that arrive meanwhile wait for it and form the next
batch, so under load batches grow by themselves. With at least `gather_from` streams open a
batch also waits up to `gather` seconds after its oldest window (calls' frames arrive spread
over the frame period, so one loop turn holds only a few of them); a batch that reaches
`max_batch` windows goes at once. The wait counts from the oldest window, never restarts.

A stream's windows depend on each other through the model's recurrent state, so a batch takes
at most one window per stream (the oldest); a stream with more waiting goes again in the next
batch, which starts as soon as the previous one is delivered.

Without a running event loop (a script, a synchronous test) `ready` runs at once, inline, so the
answer comes before `submit` returns. `run` answers everything now (waiting for the batch in
flight first): `settle`, and a stream whose queue is full. Each scheduler belongs to one loop;
streams find theirs through `LoopSchedulers`, so a process that runs several loops (tests) never
mixes them. The worker thread starts with the first big batch and stops when the last stream
detaches or the scheduler closes; a batch still computing then finishes on the thread and is
not delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future, wait
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import structlog

# The running loop or None, without an exception when there is none: the submit path asks
# it for every window, so the cheap form matters.
asyncio_running_loop = asyncio.events._get_running_loop
log = structlog.get_logger("voxline.vad")


class BatchMember(Hashable, Protocol):
    """A stream the scheduler can batch: `queued` windows wait in it, oldest first (windows
    already taken into a batch are not counted)."""

    @property
    def queued(self) -> int: ...


class Batch(Protocol):
    """One model run over windows `prepare` took from its members."""

    def compute(self) -> None:
        """The model run. May run on the worker thread: touches nothing but the batch."""
        ...

    def finish(self) -> None:
        """On the loop, after `compute`: stores states and delivers answers. Must not raise."""
        ...


M = TypeVar("M", bound=BatchMember)


@dataclass
class BatchStats:
    """What the scheduler did, for benchmarks and metrics: runs of the model, windows in them,
    the largest batch, runs on the worker thread, submits that found their stream's queue full
    (answered at once), and times the loop had to wait for the worker (`run` with a batch in
    flight)."""

    inferences: int = 0
    windows: int = 0
    largest: int = 0
    threaded: int = 0
    overflows: int = 0
    waits: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> inferences

    @property
    def mean_batch(self) -> float:
        return self.windows / self.inferences if self.inferences else 0.0

    def record(self, size: int) -> None:
        self.inferences += 1
        self.windows += size
        self.largest = max(self.largest, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1


class _Worker:
    """One thread running one scheduler's batches, one at a time. Its queue holds at most the
    batch in flight and the stop mark (the scheduler never submits while one is in flight)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[tuple[Batch, Future[None], Callable[[], None]] | None] = (
            queue.Queue(maxsize=2)
        )
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def submit(self, batch: Batch, done: Callable[[], None]) -> Future[None]:
        """Runs `batch.compute` on the thread, then `done` (on the thread)."""
        future: Future[None] = Future()
        self._jobs.put_nowait((batch, future, done))
        return future

    def stop(self) -> None:
        """The thread ends after the batch it is computing, if any (never blocks)."""
        try:
            self._jobs.put_nowait(None)
        except queue.Full:  # pragma: no cover - the scheduler never queues two batches
            log.warning("the VAD worker's queue is full; it stops after its batch")

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            batch, future, done = job
            if future.set_running_or_notify_cancel():
                try:
                    batch.compute()
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(None)
            done()


class BatchScheduler(Generic[M]):
    """Collects the streams with windows waiting and runs batches over them (module doc).

    `prepare(members)` must take exactly one window from each member (the oldest) and return
    the `Batch` that runs them; it is only given members with `queued > 0`. `loop` is the event
    loop whose turns it follows; None runs every window at once, inline.
    """

    def __init__(
        self,
        prepare: Callable[[list[M]], Batch],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        max_batch: int = 64,
        gather: float = 0.0,
        gather_from: int = 32,
        worker_from: int = 32,
    ) -> None:
        if max_batch < 1 or worker_from < 1:
            raise ValueError("max_batch and worker_from must be at least 1")
        if gather < 0 or gather_from < 1:
            raise ValueError("gather must be >= 0 and gather_from >= 1")
        self._prepare = prepare
        self.loop = loop
        self.max_batch = max_batch
        self.gather = gather
        self.gather_from = gather_from
        self.worker_from = worker_from
        self._open: weakref.WeakSet[M] = weakref.WeakSet()  # weak: a stream never closed goes
        self._ready: dict[M, None] = {}  # insertion-ordered set: oldest waiting first
        self._since = 0.0  # loop time the oldest window not yet in a batch was queued
        self._handle: asyncio.Handle | None = None  # the next dispatch, when one is due
        self._in_flight: tuple[Batch, Future[None]] | None = None
        self._worker: _Worker | None = None
        self.closed = False
        self.stats = BatchStats()

    @property
    def waiting(self) -> int:
        """Streams with a window waiting (not yet in a batch)."""
        return len(self._ready)

    @property
    def open_streams(self) -> int:
        return len(self._open)

    @property
    def in_flight(self) -> bool:
        """A batch is computing on the worker thread."""
        return self._in_flight is not None

    @property
    def worker(self) -> threading.Thread | None:
        """The worker thread, while it is kept (it ends once stopped and its batch is done)."""
        return self._worker.thread if self._worker is not None else None

    def attach(self, member: M) -> None:
        """`member` is open on this scheduler (counts towards `gather_from`)."""
        self._open.add(member)

    def detach(self, member: M) -> None:
        """`member` closed or moved to another loop: its waiting windows are not run. The last
        one out stops the worker thread."""
        self._open.discard(member)
        self._ready.pop(member, None)
        if not self._open:
            self._stop_worker()

    def ready(self, member: M) -> None:
        """`member` has a new window; it is answered in the next batch (at once without a
        loop)."""
        if self.closed:
            raise RuntimeError("the VAD batch scheduler is closed")
        ready = self._ready
        if not ready and self.loop is not None:
            self._since = self.loop.time()
        ready[member] = None
        if self.loop is None:
            self.run()
        elif self._in_flight is None:
            if self._handle is None:
                self._schedule()
            elif len(ready) == self.max_batch and isinstance(self._handle, asyncio.TimerHandle):
                self._schedule()  # a full batch does not wait out the gather

    def discard(self, member: M) -> None:
        """`member` was reset: its queued windows are not run."""
        self._ready.pop(member, None)

    def run(self) -> None:
        """Answers every waiting window now: the batch in flight (waited for), then the rest
        inline, in batches of at most `max_batch` streams."""
        if self._in_flight is not None:
            batch, future = self._in_flight
            self.stats.waits += 1
            wait([future])
            self._completed(batch, resume=False)
        self._cancel_handle()
        ready = self._ready
        while ready and not self.closed:
            taken, _ = self._take()
            if taken is not None:
                self._run_inline(taken)

    def close(self) -> None:
        """Nothing more runs or is delivered; the worker thread ends after the batch it is
        computing, if any (this does not wait for it)."""
        self.closed = True
        self._cancel_handle()
        self._ready.clear()
        self._in_flight = None
        self._stop_worker()

    # -- internals -------------------------------------------------------------------------

    def _schedule(self, *, now: bool = False) -> None:
        """Arranges the next dispatch: after the gather wait with many streams open and a
        batch not yet full, else at the next loop turn (`now`: at once, without waiting for
        a loop turn: the worker's batch was just delivered, so the loop has had its turn)."""
        assert self.loop is not None
        self._cancel_handle()
        if (
            self.gather
            and len(self._open) >= self.gather_from
            and len(self._ready) < (self.max_batch)
        ):
            delay = self._since + self.gather - self.loop.time()
            if delay > 0:
                self._handle = self.loop.call_later(delay, self._dispatch)
                return
        if now:
            self._dispatch()
        else:
            self._handle = self.loop.call_soon(self._dispatch)

    def _cancel_handle(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _take(self) -> tuple[Batch | None, int]:
        """The next batch, prepared, and its size: the oldest `max_batch` streams with a window
        queued (None when no stream has one). Left-over windows keep `_since`: they are as old
        as the batch's, so the next batch goes as soon as this one is delivered. (Restarting
        the gather for them was tried: at 150 calls it raised p99 from ~10 to ~34 ms and saved
        no measurable CPU: a stream whose audio came in a burst waits one gather per window.)"""
        ready = self._ready
        members: list[M] = []
        empty: list[M] = []
        for member in ready:
            if member.queued:
                members.append(member)
                if len(members) == self.max_batch:
                    break
            else:
                empty.append(member)
        for member in empty:
            del ready[member]
        if not members:
            return None, 0
        batch = self._prepare(members)
        for member in members:
            if not member.queued:
                del ready[member]
        self.stats.record(len(members))
        return batch, len(members)

    def _dispatch(self) -> None:
        self._handle = None
        if self._in_flight is not None or not self._ready or self.closed:
            return
        batch, size = self._take()
        if batch is None:
            return
        if size >= self.worker_from:
            self._to_worker(batch)
            return
        self._run_inline(batch)
        if self._ready and self._handle is None and not self.closed:
            self._schedule()

    def _to_worker(self, batch: Batch) -> None:
        loop = self.loop
        assert loop is not None
        if self._worker is None:
            self._worker = _Worker("voxline-vad-batch")
        self.stats.threaded += 1

        def done() -> None:  # on the worker thread
            # the loop may have closed meanwhile: then nobody waits for the answers
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._completed, batch)

        self._in_flight = (batch, self._worker.submit(batch, done))

    def _run_inline(self, batch: Batch) -> None:
        batch.compute()
        batch.finish()

    def _completed(self, batch: Batch, *, resume: bool = True) -> None:
        """The worker's batch is done (on the loop): deliver it, then (`resume`) start the
        next."""
        if self._in_flight is None or self._in_flight[0] is not batch:
            return  # `run` delivered it already, or the scheduler closed
        future = self._in_flight[1]
        self._in_flight = None
        try:
            future.result()
        except CancelledError:  # the worker stopped before starting it
            batch.compute()
        except Exception:
            log.exception("a VAD batch failed outside the model run")
        batch.finish()
        if resume and self._ready and self._handle is None and not self.closed:
            self._schedule(now=True)

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


class LoopSchedulers(Generic[M]):
    """One `BatchScheduler` per event loop for one model (weakly keyed: a closed loop's goes).
    The settings apply to every scheduler, those already made included."""

    def __init__(
        self,
        prepare: Callable[[list[M]], Batch],
        *,
        max_batch: int = 64,
        gather: float = 0.0,
        gather_from: int = 32,
        worker_from: int = 32,
    ) -> None:
        self._prepare = prepare
        self._max_batch = max_batch
        self._gather = (gather, gather_from)
        self._worker_from = worker_from
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BatchScheduler[M]] = (
            weakref.WeakKeyDictionary()
        )
        self._unlooped: BatchScheduler[M] | None = None

    def set_gather(self, gather: float, gather_from: int) -> None:
        self._gather = (gather, gather_from)
        for scheduler in self._by_loop.values():
            scheduler.gather, scheduler.gather_from = gather, gather_from

    def configure(self, *, max_batch: int | None = None, worker_from: int | None = None) -> None:
        """Changes the batch cap or the worker threshold (benchmarks try several)."""
        if max_batch is not None:
            self._max_batch = max_batch
        if worker_from is not None:
            self._worker_from = worker_from
        for scheduler in self._by_loop.values():
            scheduler.max_batch, scheduler.worker_from = self._max_batch, self._worker_from

    def current(self) -> BatchScheduler[M]:
        """The running loop's scheduler (one that runs at once when no loop runs)."""
        loop = asyncio_running_loop()
        if loop is None:
            if self._unlooped is None:
                self._unlooped = BatchScheduler(self._prepare, max_batch=self._max_batch)
            return self._unlooped
        scheduler = self._by_loop.get(loop)
        if scheduler is None or scheduler.closed:
            gather, gather_from = self._gather
            scheduler = BatchScheduler(
                self._prepare,
                loop=loop,
                max_batch=self._max_batch,
                gather=gather,
                gather_from=gather_from,
                worker_from=self._worker_from,
            )
            self._by_loop[loop] = scheduler
        return scheduler

    def stats(self) -> BatchStats:
        """The running loop's statistics (an empty record before its first window)."""
        return self.current().stats

    def close(self) -> None:
        """Closes every scheduler (their worker threads end after their batch in flight)."""
        for scheduler in list(self._by_loop.values()):
            scheduler.close()
        self._by_loop.clear()
