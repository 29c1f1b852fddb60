"""Keeps CPython's full garbage collections off the audio path.

A full (generation-2) collection walks every live object, and a process holding a hundred
sessions holds a lot of them: measured, it stalls the event loop — every caller's audio — for
over 100 ms (docs/performance.md). Sessions are long-lived, so rescanning them buys nothing.
While sessions accumulate, their objects are frozen out of the collector's reach (`gc.freeze`);
when the process has no session left — nobody is listening — they are unfrozen and collected
in one go, so cyclic garbage of closed sessions is reclaimed at a moment that costs no one.
A process that is never idle unfreezes after enough sessions have come and gone, so memory held
by frozen garbage stays bounded: one deliberate pause per that many closings instead of one
whenever the collector's thresholds say.
"""

from __future__ import annotations

import gc


class CollectorPolicy:
    """Process-wide bookkeeping of live sessions, deciding when to freeze and collect."""

    def __init__(self, *, growth: float = 1.25, min_sessions: int = 8) -> None:
        self.growth = growth
        self.min_sessions = min_sessions
        self.live = 0
        self.frozen_at = 0  # live sessions at the last freeze; 0: nothing frozen by us
        self.closed_since_freeze = 0

    def session_started(self) -> None:
        self.live += 1
        if self.live >= max(self.min_sessions, self.frozen_at * self.growth):
            gc.freeze()
            self.frozen_at = self.live

    def session_closed(self) -> None:
        self.live = max(0, self.live - 1)
        if not self.frozen_at:
            return
        self.closed_since_freeze += 1
        if self.live == 0:
            self._release(refreeze=False)
        elif self.closed_since_freeze > max(64, 2 * self.frozen_at):
            self._release(refreeze=True)

    def _release(self, *, refreeze: bool) -> None:
        gc.unfreeze()
        gc.collect()
        self.closed_since_freeze = 0
        self.frozen_at = 0
        if refreeze:
            gc.freeze()
            self.frozen_at = self.live


COLLECTOR = CollectorPolicy()
