"""History retention: conversations idle for longer than an age are deleted, turns and all."""

from __future__ import annotations

import re
import time

from voxline.settings import Settings
from voxline.store.factory import open_store

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_age(text: str) -> float:
    """Seconds in an age such as `7d`, `12h`, `30m`, `90s` or `2w`."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"not an age: {text!r} (use a number and s, m, h, d or w, e.g. 7d)")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


async def expire_history(settings: Settings, older_than: float) -> int:
    """Delete conversations with no activity in the last `older_than` seconds; returns how many."""
    store = await open_store(settings=settings)
    try:
        return await store.delete_conversations_before(time.time() - older_than)
    finally:
        await store.close()
