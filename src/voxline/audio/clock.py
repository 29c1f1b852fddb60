"""Clocks for code that waits on real time, so tests can run it on virtual time.

`timer(deadline)` hands back a plain future rather than a coroutine: a waiter that must stop at
once (the pacer on barge-in) can resolve that future itself instead of cancelling its own task.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale; only differences are meaningful."""
        ...

    def timer(self, deadline: float) -> asyncio.Future[None]:
        """A future that resolves when `now()` reaches `deadline` (at once if already past).
        Resolving or cancelling it early is allowed and simply wakes the waiter."""
        ...


async def sleep_until(clock: Clock, deadline: float) -> None:
    await clock.timer(deadline)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class MonotonicClock:
    """Real time (`time.monotonic`), with timers scheduled on the running event loop."""

    def now(self) -> float:
        return time.monotonic()

    def timer(self, deadline: float) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        delay = deadline - self.now()
        if delay <= 0:
            future.set_result(None)
        else:
            loop.call_later(delay, _wake, future)
        return future


class VirtualClock:
    """Time that moves only when a test says so, making timing assertions exact and instant.

    `advance(seconds)` steps through every pending deadline in order, setting `now()` to each
    one and letting the woken tasks run before moving on, so a task that sleeps again from
    inside the advanced window is woken in the same call, exactly as on a real clock.
    """

    def __init__(self, start: float = 0.0, *, settle_steps: int = 20) -> None:
        self._now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._settle_steps = settle_steps

    def now(self) -> float:
        return self._now

    def timer(self, deadline: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if deadline <= self._now:
            future.set_result(None)
        else:
            heapq.heappush(self._timers, (deadline, next(self._seq), future))
        return future

    @property
    def pending(self) -> int:
        """Timers still waiting (resolved or cancelled ones are not counted)."""
        return sum(1 for _, _, future in self._timers if not future.done())

    async def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self._now + seconds
        await self._settle()
        while self._timers and self._timers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._timers)
            if future.done():
                continue
            self._now = deadline
            future.set_result(None)
            await self._settle()
        self._now = target
        await self._settle()

    async def _settle(self) -> None:
        # Woken tasks may hop through a few awaits before sleeping again; a bounded number of
        # loop turns lets them, without the clock knowing anything about the tasks.
        for _ in range(self._settle_steps):
            await asyncio.sleep(0)
