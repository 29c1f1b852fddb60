"""TaskGroup: every task has an owner that cancels and awaits it; nothing starts after close."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from voxline.events import EventBus
from voxline.tasks import TaskGroup, TaskGroupClosedError


async def test_close_cancels_and_awaits_every_child() -> None:
    group = TaskGroup("test")
    finished: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            finished.append("cleaned up")

    tasks = [group.spawn(forever()) for _ in range(3)]
    await asyncio.sleep(0)
    await group.close()
    assert all(t.cancelled() for t in tasks) and finished == ["cleaned up"] * 3
    assert len(group) == 0


async def test_nothing_starts_after_close_and_the_coroutine_never_runs() -> None:
    group = TaskGroup("test")
    await group.close()
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    coroutine = work()
    with pytest.raises(TaskGroupClosedError):
        group.spawn(coroutine)
    await asyncio.sleep(0)
    assert ran == [] and coroutine.cr_frame is None  # closed, so no "never awaited" warning


async def test_a_grace_period_lets_children_finish_first() -> None:
    group = TaskGroup("test")
    done = group.spawn(asyncio.sleep(0.05, result="finished"))
    slow = group.spawn(asyncio.sleep(3600))
    await group.close(grace=0.2)
    assert done.result() == "finished" and slow.cancelled()


async def test_a_failing_child_is_reported_not_raised() -> None:
    seen: list[BaseException] = []
    group = TaskGroup("test", on_error=seen.append)

    async def boom() -> None:
        raise ValueError("boom")

    with structlog.testing.capture_logs() as logs:
        task = group.spawn(boom())
        assert await group.wait(within=1.0)
    assert isinstance(seen[0], ValueError) and task.done()
    assert any(e["event"] == "background task failed" for e in logs)


async def test_wait_reports_a_timeout() -> None:
    group = TaskGroup("test")
    group.spawn(asyncio.sleep(3600))
    assert not await group.wait(within=0.05)
    await group.close()


async def test_the_event_bus_drains_its_async_handlers() -> None:
    bus = EventBus(strict=False)
    heard: list[str] = []

    async def handler(**_: object) -> None:
        await asyncio.sleep(0.01)
        heard.append("handled")

    bus.on("anything", handler)
    bus.emit("anything")
    bus.emit("anything")
    await bus.drain()
    assert heard == ["handled", "handled"]


def test_a_stream_end_always_fits_a_bounded_queue() -> None:
    from voxline.tasks import put_final

    queue: asyncio.Queue[str] = asyncio.Queue(2)
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert put_final(queue, "end") == 1  # the oldest gave way
    assert [queue.get_nowait(), queue.get_nowait()] == ["b", "end"]
