"""The phone and browser calls live on this worker, by connection and by conversation.

Call-control tools find *their* call by the connection of the session that runs them (two calls
from one number each hang up only themselves); text injection, addressed to a conversation, goes
to that conversation's most recent call.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


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
