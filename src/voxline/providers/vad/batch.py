"""One VAD inference per event-loop turn for every call that has a window waiting.

Why: on a server with many calls the VAD is most of a listening call's CPU, and most of one
Silero run is fixed cost (the ONNX Runtime call, small matrix products that use the core
badly). The same model run over a batch of windows costs about half as much per window at 8
and about 0.45x at 32 and more (`benchmarks/pipeline_overhead.py` prints the curve).

How: a stream's `submit` queues its window and tells the `BatchScheduler`; the first window of a
loop turn schedules one `run` with `loop.call_soon`, so every window submitted during that turn
(the frames of other calls handled in the same turn) goes into the same inference. A lone call
has its answer at the start of the next loop turn: microseconds later, not a frame later. Under
load more calls' frames land in each turn, so batches grow exactly when the saving matters.

A stream's windows depend on each other through the model's recurrent state, so one inference
takes at most one window per stream (the oldest); a stream with more waiting (a frame holding
several windows) goes round again in the same `run` until nothing is left.

Without a running event loop (a script, a synchronous test) `ready` runs at once, so the answer
comes before `submit` returns. Each scheduler belongs to one loop; streams find theirs through
`LoopSchedulers`, so a process that runs several loops (tests) never mixes them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, Protocol, TypeVar

# The running loop or None, without an exception when there is none: the submit path asks
# it for every window, so the cheap form matters.
asyncio_running_loop = asyncio.events._get_running_loop


class BatchMember(Hashable, Protocol):
    """A stream the scheduler can batch: `pending` windows wait in it, oldest first."""

    @property
    def pending(self) -> int: ...


M = TypeVar("M", bound=BatchMember)


@dataclass
class BatchStats:
    """What the scheduler did, for benchmarks and metrics: runs of the model, windows in them,
    the largest batch, and submits that found their stream's queue full (run at once)."""

    inferences: int = 0
    windows: int = 0
    largest: int = 0
    overflows: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> inferences

    @property
    def mean_batch(self) -> float:
        return self.windows / self.inferences if self.inferences else 0.0

    def record(self, size: int) -> None:
        self.inferences += 1
        self.windows += size
        self.largest = max(self.largest, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1


class BatchScheduler(Generic[M]):
    """Collects the streams with windows waiting and runs `infer` over them once per loop turn.

    `infer(members)` must take exactly one window from each member (the oldest), run them as one
    batch and deliver each member's answer; it is only given members with `pending > 0`. `loop`
    is the event loop whose turns it follows; None runs every window at once.

    `gather`: with at least `gather_from` streams open, a run waits up to `gather` seconds after
    its first window instead of one loop turn. Calls' frames arrive spread over the frame period
    (each call has its own socket), so one loop turn holds only a few of them; a few
    milliseconds hold many, for a fraction of the cost per window. Below `gather_from` open
    streams (a lone call, a quiet server) the answer comes in the next loop turn as always.
    """

    def __init__(
        self,
        infer: Callable[[list[M]], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        max_batch: int = 256,
        gather: float = 0.0,
        gather_from: int = 32,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if gather < 0 or gather_from < 1:
            raise ValueError("gather must be >= 0 and gather_from >= 1")
        self._infer = infer
        self.loop = loop
        self.max_batch = max_batch
        self.gather = gather
        self.gather_from = gather_from
        self._open: weakref.WeakSet[M] = weakref.WeakSet()  # weak: a stream never closed goes
        self._ready: dict[M, None] = {}  # insertion-ordered set: oldest waiting first
        self._scheduled = False
        self.stats = BatchStats()

    @property
    def waiting(self) -> int:
        """Streams with a window waiting."""
        return len(self._ready)

    @property
    def open_streams(self) -> int:
        return len(self._open)

    def attach(self, member: M) -> None:
        """`member` is open on this scheduler (counts towards `gather_from`)."""
        self._open.add(member)

    def detach(self, member: M) -> None:
        """`member` closed or moved to another loop: its waiting windows are not run."""
        self._open.discard(member)
        self._ready.pop(member, None)

    def ready(self, member: M) -> None:
        """`member` has a new window; it is answered in this loop turn's run (at once without
        a loop; after up to `gather` seconds with many streams open)."""
        self._ready[member] = None
        if self._scheduled:
            return
        if self.loop is None:
            self.run()
            return
        self._scheduled = True
        if self.gather and len(self._open) >= self.gather_from:
            self.loop.call_later(self.gather, self._scheduled_run)
        else:
            self.loop.call_soon(self._scheduled_run)

    def discard(self, member: M) -> None:
        """`member` was reset: its queued windows are not run."""
        self._ready.pop(member, None)

    def run(self) -> None:
        """Answers every waiting window now, in batches of at most `max_batch` streams."""
        ready = self._ready
        while ready:
            members = list(islice(ready, self.max_batch))
            batch = [member for member in members if member.pending]
            if batch:
                self.stats.record(len(batch))
                self._infer(batch)  # delivers: callbacks may submit, reset or close streams
            for member in members:
                if not member.pending:
                    ready.pop(member, None)

    def _scheduled_run(self) -> None:
        self._scheduled = False
        self.run()


class LoopSchedulers(Generic[M]):
    """One `BatchScheduler` per event loop for one model (weakly keyed: a closed loop's goes).
    `gather` and `gather_from` apply to every scheduler, those already made included."""

    def __init__(
        self,
        infer: Callable[[list[M]], None],
        *,
        max_batch: int = 256,
        gather: float = 0.0,
        gather_from: int = 32,
    ) -> None:
        self._infer = infer
        self._max_batch = max_batch
        self._gather = (gather, gather_from)
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BatchScheduler[M]] = (
            weakref.WeakKeyDictionary()
        )
        self._unlooped: BatchScheduler[M] | None = None

    def set_gather(self, gather: float, gather_from: int) -> None:
        self._gather = (gather, gather_from)
        for scheduler in self._by_loop.values():
            scheduler.gather, scheduler.gather_from = gather, gather_from

    def current(self) -> BatchScheduler[M]:
        """The running loop's scheduler (one that runs at once when no loop runs)."""
        loop = asyncio_running_loop()
        if loop is None:
            if self._unlooped is None:
                self._unlooped = BatchScheduler(self._infer, max_batch=self._max_batch)
            return self._unlooped
        scheduler = self._by_loop.get(loop)
        if scheduler is None:
            gather, gather_from = self._gather
            scheduler = BatchScheduler(
                self._infer,
                loop=loop,
                max_batch=self._max_batch,
                gather=gather,
                gather_from=gather_from,
            )
            self._by_loop[loop] = scheduler
        return scheduler

    def stats(self) -> BatchStats:
        """The running loop's statistics (an empty record before its first window)."""
        return self.current().stats
