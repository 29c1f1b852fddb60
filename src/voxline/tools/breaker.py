"""A circuit breaker, so a dead backend costs the caller one quick "unavailable", not a timeout.

Closed: calls pass and consecutive failures are counted. Open: calls are refused until
`reset_after` seconds have passed. Half-open: exactly one trial call passes; its success closes
the circuit, its failure opens it again. The clock is injectable so tests move time by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

import structlog

_log = structlog.get_logger("voxline.tools")


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        threshold: int,
        reset_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"breaker threshold must be at least 1, got {threshold}")
        self.name = name
        self._threshold = threshold
        self._reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at >= self._reset_after:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allow(self) -> bool:
        """Whether a call may start now; in half-open state this claims the single trial slot."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN or self._trial_running:
            return False
        self._trial_running = True
        return True

    def record_success(self) -> None:
        if self._opened_at is not None:
            _log.info("circuit closed", tool=self.name)
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_running or self._failures >= self._threshold:
            self._opened_at = self._clock()
            _log.warning("circuit opened", tool=self.name, failures=self._failures)
        self._trial_running = False

    def release(self) -> None:
        """End a call that proved nothing either way (cancelled, or refused for bad arguments),
        so a half-open circuit does not wait forever for a verdict that will never come."""
        self._trial_running = False
