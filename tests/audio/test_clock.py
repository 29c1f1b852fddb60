from __future__ import annotations

import asyncio

import pytest

from voxline.audio.clock import Clock, MonotonicClock, VirtualClock, sleep_until


async def test_virtual_clock_wakes_sleepers_in_deadline_order_at_their_deadlines() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await sleep_until(clock, deadline)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper(n, d)) for n, d in (("b", 0.3), ("a", 0.1), ("c", 5))]
    await clock.advance(1.0)
    assert woke == [("a", 0.1), ("b", 0.3)]
    assert clock.now() == 1.0 and clock.pending == 1
    await clock.advance(4.0)
    assert woke[-1] == ("c", 5.0)
    await asyncio.gather(*tasks)


async def test_a_sleeper_that_sleeps_again_inside_the_window_is_woken_in_the_same_advance() -> None:
    clock = VirtualClock()
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(5):
            await sleep_until(clock, clock.now() + 0.1)
            ticks.append(clock.now())

    task = asyncio.create_task(ticker())
    await clock.advance(0.5)
    await task
    assert ticks == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


async def test_past_deadlines_resolve_at_once_and_time_cannot_go_back() -> None:
    clock = VirtualClock(start=10.0)
    assert clock.timer(9.0).done()
    with pytest.raises(ValueError):
        await clock.advance(-1)


async def test_monotonic_clock_timers_fire_and_can_be_woken_early() -> None:
    clock = MonotonicClock()
    assert isinstance(clock, Clock)
    await sleep_until(clock, clock.now() + 0.01)
    early = clock.timer(clock.now() + 60)
    early.set_result(None)  # the pending call_later must not fail on a resolved future
    await early
    assert clock.timer(clock.now() - 1).done()
