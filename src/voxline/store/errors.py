"""Errors a store raises for bad writes, shared by every backend so callers map them once.

The API layer turns `ConflictError` into 409 and `NotFoundError` into 404; both carry the entity
and the offending field or id so the response can name them without parsing the message.
"""

from __future__ import annotations


class StoreError(Exception):
    """A write the store refused; nothing of it was kept."""


class ConflictError(StoreError):
    """A unique field already belongs to another record (an agent name, a listener address)."""

    def __init__(self, entity: str, field: str, value: str) -> None:
        super().__init__(f"another {entity} already has {field} {value!r}")
        self.entity = entity
        self.field = field
        self.value = value


class NotFoundError(StoreError):
    """A write refers to a record that does not exist (a listener for a deleted agent)."""

    def __init__(self, entity: str, record_id: str) -> None:
        super().__init__(f"no {entity} with id {record_id!r}")
        self.entity = entity
        self.record_id = record_id


class BrokerConnectionError(ConnectionError):
    """An event broker lost its server and could not get it back; the message says which."""


class SeqConflictError(StoreError):
    """A turn was written at a sequence number another turn of its conversation already holds.

    Sequence numbers are unique per conversation by constraint, so two writers (two calls from
    one caller on two workers) can never interleave or duplicate them: the loser of the race gets
    this, reloads what the other wrote and renumbers its own unwritten turns after it.
    """

    def __init__(self, conversation_id: str, detail: str = "") -> None:
        super().__init__(
            f"turn sequence number taken in conversation {conversation_id!r}"
            + (f": {detail}" if detail else "")
        )
        self.conversation_id = conversation_id
