"""`TaskGroup`: the one owner of background tasks that outlive the call that started them.

asyncio's own `TaskGroup` is scoped to an `async with` block and cancels every sibling when one
fails; a live session, a hub or a worker link instead needs a long-lived set of tasks that
report their own failures, can be closed from anywhere (cancel, then await every child), and
refuse new work once closed, so nothing starts after `close()`. This replaces the hand-written
"task set + done callback" copies that each owner used to carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger("voxline.tasks")

ErrorHandler = Callable[[BaseException], None]


class TaskGroupClosedError(RuntimeError):
    """Work was handed to a group that is closed (its owner is gone)."""


class TaskGroup:
    """Owns tasks: `spawn` starts one, `close` cancels and awaits them all.

    A child's exception is logged (and passed to `on_error`) when it finishes, never lost and
    never raised into the owner. `wait` lets an owner let its children finish on their own.
    """

    def __init__(self, name: str, *, on_error: ErrorHandler | None = None) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_error = on_error
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(
        self, work: Coroutine[Any, Any, T] | Awaitable[T], *, name: str = ""
    ) -> asyncio.Task[T]:
        """Start `work` as a child. Raises `TaskGroupClosedError` once the group is closed
        (the coroutine is closed, so it never runs and never warns)."""
        if self._closed:
            if asyncio.iscoroutine(work):
                work.close()
            raise TaskGroupClosedError(f"{self.name} is closed")
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def wait(self, within: float | None = None) -> bool:
        """Wait for the children running now (and any they start) to finish by themselves.
        Returns False if some were still running after `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while self._tasks:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            if remaining == 0.0:
                return False
            _, pending = await asyncio.wait(list(self._tasks), timeout=remaining)
            if pending and deadline is not None and loop.time() >= deadline:
                return False
        return True

    async def close(self, grace: float = 0.0) -> None:
        """Refuse new work, give children `grace` seconds to finish, cancel the rest and await
        every one of them. Safe to call twice."""
        self._closed = True
        if grace > 0 and self._tasks:
            await self.wait(grace)
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("background task failed", group=self.name, task=task.get_name(), exc_info=exc)
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:  # an error reporter must not break the loop's callback
                log.exception("task error handler failed", group=self.name)


def put_final(queue: asyncio.Queue[T], item: T) -> int:
    """Put a stream's last item (an error, an end marker) into a bounded queue without waiting.
    The stream is over, so when the queue is full the oldest waiting items give way to it: the
    consumer must learn how the stream ended. Returns how many items were dropped."""
    dropped = 0
    while True:
        try:
            queue.put_nowait(item)
            return dropped
        except asyncio.QueueFull:
            queue.get_nowait()
            dropped += 1
