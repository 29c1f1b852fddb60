"""The session's state machine.

States are what an observer (a UI, the debug feed, the voice pipeline) needs to know to behave:
whether the agent is listening, thinking, calling tools or speaking. Transitions outside the
table are bugs in the engine, so they raise rather than drift silently.
"""

from __future__ import annotations

import time
from enum import StrEnum

from voxline.events import EventBus


class SessionState(StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    THINKING = "thinking"
    CALLING_TOOLS = "calling_tools"
    SPEAKING = "speaking"
    INTERRUPTED = "interrupted"


S = SessionState

ALLOWED: dict[SessionState, frozenset[SessionState]] = {
    S.IDLE: frozenset({S.LISTENING, S.THINKING, S.SPEAKING}),
    S.LISTENING: frozenset({S.TRANSCRIBING, S.THINKING, S.SPEAKING, S.IDLE}),
    S.TRANSCRIBING: frozenset({S.THINKING, S.LISTENING, S.INTERRUPTED, S.IDLE}),
    S.THINKING: frozenset({S.SPEAKING, S.CALLING_TOOLS, S.LISTENING, S.INTERRUPTED, S.IDLE}),
    S.CALLING_TOOLS: frozenset({S.THINKING, S.SPEAKING, S.LISTENING, S.INTERRUPTED, S.IDLE}),
    S.SPEAKING: frozenset({S.THINKING, S.CALLING_TOOLS, S.LISTENING, S.INTERRUPTED, S.IDLE}),
    S.INTERRUPTED: frozenset({S.LISTENING, S.TRANSCRIBING, S.THINKING, S.IDLE}),
}


class InvalidTransition(RuntimeError):
    pass


class StateMachine:
    def __init__(self, bus: EventBus, initial: SessionState = S.IDLE) -> None:
        self._bus = bus
        self._state = initial
        self._since = time.monotonic()

    @property
    def state(self) -> SessionState:
        return self._state

    def to(self, new: SessionState) -> None:
        """Move to `new` and emit `state_changed`; staying in the same state is a no-op."""
        old = self._state
        if new == old:
            return
        if new not in ALLOWED[old]:
            raise InvalidTransition(f"{old} -> {new} is not a valid session transition")
        now = time.monotonic()
        self._state, duration, self._since = new, now - self._since, now
        self._bus.emit("state_changed", old=old, new=new, duration=duration)
