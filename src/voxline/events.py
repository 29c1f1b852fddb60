"""A tiny synchronous event bus.

Handlers run inline, in emit order, because the hot path (a streaming reply mutating a turn
dozens of times a second) must not pay for a task or a queue per event. A handler that needs to
do I/O schedules its own task (the sync subscriber does exactly that). A failing handler is
logged and skipped: an observer must never break the conversation it observes.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import structlog

from voxline.tasks import TaskGroup

log = structlog.get_logger("voxline.events")

Handler = Callable[..., Any]

# The names a session emits. Kept here so subscribers can discover them and typos fail fast.
EVENT_NAMES = frozenset(
    {
        "turn_added",
        "turn_updated",
        "turn_deleted",
        "state_changed",
        "bot_text_delta",
        "reply_started",
        "reply_finished",
        "interrupted",
        "barge_in_resumed",  # the caller spoke over the bot but it was a backchannel or noise
        "tool_started",
        "tool_finished",
        "approval_requested",
        "approval_resolved",
        "guardrail_tripped",
        "summary_created",
        "metrics",
        "error",
        "session_started",
        "session_closed",
    }
)


class EventBus:
    """Named events with any number of subscribers; `"*"` subscribes to everything."""

    def __init__(self, *, strict: bool = True) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._strict = strict
        self._tasks = TaskGroup("event handlers")  # async handlers' tasks

    def on(self, event: str, handler: Handler) -> Callable[[], None]:
        """Subscribe; returns a function that unsubscribes."""
        if self._strict and event != "*" and event not in EVENT_NAMES:
            raise ValueError(f"unknown event {event!r}; known: {', '.join(sorted(EVENT_NAMES))}")
        self._handlers[event].append(handler)

        def off() -> None:
            if handler in self._handlers[event]:
                self._handlers[event].remove(handler)

        return off

    def emit(self, event: str, /, **payload: Any) -> None:
        for handler in tuple(self._handlers.get(event, ())):
            self._call(event, handler, payload)
        for handler in tuple(self._handlers.get("*", ())):
            self._call(event, handler, {"event": event, **payload})

    def _call(self, event: str, handler: Handler, payload: dict[str, Any]) -> None:
        try:
            result = handler(**payload)
            if inspect.isawaitable(result):
                self._tasks.spawn(result, name=f"on {event}")
        except Exception:
            log.exception("event handler failed", event_name=event)

    async def drain(self) -> None:
        """Wait for async handlers started so far (used on shutdown and in tests)."""
        await self._tasks.wait()
