"""The subject resolver contract.

A subject is the key of a caller's memory: every channel address that belongs to one person must
resolve to the same subject, or an SMS thread and a phone call from that person would be two
strangers. Resolution is async so an application can look callers up in its own CRM.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class SubjectResolver(Protocol):
    async def resolve(self, address: str, *, channel: str) -> str | None:
        """The canonical subject for `address` on `channel` ("voice", "sms"), or None when the
        caller cannot be identified (withheld caller ID): such a caller gets no shared memory."""
        ...
