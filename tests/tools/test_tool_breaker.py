"""The circuit breaker's state machine, driven by a hand-moved clock."""

from __future__ import annotations

import pytest

from tests.tools.tool_fakes import FakeClock
from voxline.tools.breaker import CircuitBreaker, CircuitState


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("probe", threshold=3, reset_after=30.0, clock=clock)


def test_opens_after_threshold_consecutive_failures(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    states = []
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
        states.append(breaker.state)
    assert states == [CircuitState.CLOSED, CircuitState.CLOSED, CircuitState.OPEN]
    assert not breaker.allow()


def test_a_success_resets_the_failure_count(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == CircuitState.CLOSED


def test_half_open_lets_exactly_one_trial_through(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(29.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.state == CircuitState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # the trial is still running


def test_trial_success_closes(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(30)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CircuitState.CLOSED
    assert breaker.allow()
    assert breaker.allow()


def test_trial_failure_reopens_for_a_full_reset_period(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(30)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == CircuitState.OPEN
    clock.advance(29)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_release_frees_the_trial_slot_without_a_verdict(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(30)
    assert breaker.allow()
    breaker.release()
    assert breaker.state == CircuitState.HALF_OPEN
    assert breaker.allow()


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CircuitBreaker("probe", threshold=0, reset_after=1)
