"""The phone and browser calls live on this worker, by connection and by conversation.

Call-control tools find *their* call by the connection of the session that runs them (two calls
from one number each hang up only themselves); text injection, addressed to a conversation, goes
to that conversation's most recent call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar


class LiveCall(Protocol):
    def inject(self, text: str, *, as_system: bool = False) -> None:
        """Put text into the call; the agent answers aloud."""
        ...


C = TypeVar("C", bound=LiveCall)


class LiveCalls(Generic[C]):
    def __init__(self) -> None:
        self._by_connection: dict[str, tuple[str, C]] = {}

    def __len__(self) -> int:
        return len(self._by_connection)

    def add(self, connection_id: str, conversation_id: str, call: C) -> None:
        self._by_connection[connection_id] = (conversation_id, call)

    def remove(self, connection_id: str) -> None:
        self._by_connection.pop(connection_id, None)

    def get(self, connection_id: str) -> C | None:
        found = self._by_connection.get(connection_id)
        return found[1] if found is not None else None

    def latest(self, conversation_id: str) -> C | None:
        """The conversation's most recent live call here."""
        calls = [call for conv, call in self._by_connection.values() if conv == conversation_id]
        return calls[-1] if calls else None


class Finishing(Protocol):
    async def finish(self) -> None:
        """The far end is gone: stop speaking and listening, settle the reply in flight."""
        ...


class CallEnded(Protocol):
    def publish(self, event_type: str, /, **fields: Any) -> None: ...


async def close_call(
    calls: LiveCalls[Any],
    connection_id: str,
    call: Finishing,
    writer: asyncio.Task[Any],
    feed: CallEnded | None,
    **ended: Any,
) -> None:
    """What every voice route does when its socket is over: forget the call, let it settle,
    stop its writer, and tell the debug feed (`ended`: the fields of `call_ended`)."""
    calls.remove(connection_id)
    await call.finish()
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer
    if feed is not None:
        feed.publish("call_ended", **ended)


class Hosted(LiveCall, Finishing, Protocol):
    """A voice call a route hosts: injectable while it lives, settled when its socket ends."""


@contextlib.asynccontextmanager
async def hosting_call(
    calls: LiveCalls[Any],
    connection_id: str,
    conversation_id: str,
    call: Hosted,
    writer: Coroutine[Any, Any, Any],
    feed: CallEnded | None,
    *,
    call_sid: str | None,
    caller: str | None,
    listener_id: str | None,
    turns: Callable[[], int],
) -> AsyncIterator[None]:
    """The bracket every Twilio voice route puts around a call: register it (so call-control
    tools and injection find it), start its `writer`, tell the debug feed it started, and on
    the way out, however the body ended, `close_call` it. `turns` is read at the end (a
    callable returning the number of turns the call left), so the feed's `call_ended` counts
    what really happened."""
    calls.add(connection_id, conversation_id, call)
    task = asyncio.create_task(writer)
    if feed is not None:
        feed.publish(
            "call_started",
            channel="voice",
            call_sid=call_sid,
            caller=caller,
            listener_id=listener_id,
        )
    try:
        yield
    finally:
        await close_call(calls, connection_id, call, task, feed, call_sid=call_sid, turns=turns())
