"""Listeners: which agent answers a number or a WebSocket path, and their reclaiming.

Any worker routes any call, so every lookup reads the store. A phone listener's address is an
E.164 number, a prefix wildcard (`+1415*`) or `*`; the most specific match wins. A listener
stays alive while a debug feed client is connected to it (the feed refreshes `last_seen_at`);
once nobody has been there for its `idle_timeout`, any worker's sweep deletes it, so numbers
are not leaked by clients that vanished. `idle_timeout == 0` marks a permanent listener.
"""

from __future__ import annotations

import asyncio
import re
import time

import structlog

from voxline.server.feed import listener_channel
from voxline.store.base import EventBroker, ListenerKind, ListenerRecord, PlatformStore

log = structlog.get_logger("voxline.server.listeners")

WS_PREFIX = "/ws/"
NUMBER = re.compile(r"^\+[1-9][0-9]{1,14}$")
WILDCARD = re.compile(r"^(\+[0-9]{0,15})?\*$")
WS_PATH = re.compile(r"^/ws/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$")
LISTENER_DELETED = "listener_deleted"


def phone_address_problem(address: str) -> str | None:
    if NUMBER.match(address) or WILDCARD.match(address):
        return None
    return "must be an E.164 number (+14155550100), a prefix wildcard (+1415*) or *"


def websocket_path_problem(path: str) -> str | None:
    dots = any(segment in (".", "..") for segment in path.split("/"))
    if len(path) <= 200 and WS_PATH.match(path) and not dots:
        return None
    return (
        f"must be a path under {WS_PREFIX} made of letters, digits and . _ ~ - "
        "(no . or .. segments; e.g. /ws/support), at most 200 characters"
    )


def _specificity(address: str, number: str) -> int | None:
    """How closely `address` matches `number`: longer is better, None is no match."""
    if address == number:
        return 1000
    if address.endswith("*") and number.startswith(address[:-1]):
        return len(address)
    return None


class ListenerDirectory:
    def __init__(self, store: PlatformStore, broker: EventBroker) -> None:
        self.store = store
        self.broker = broker

    async def for_number(self, number: str) -> ListenerRecord | None:
        best: tuple[int, ListenerRecord] | None = None
        for listener in await self.store.list_listeners():
            if listener.kind != ListenerKind.PHONE:
                continue
            score = _specificity(listener.address, number)
            if score is not None and (best is None or score > best[0]):
                best = (score, listener)
        return best[1] if best is not None else None

    async def for_path(self, path: str) -> ListenerRecord | None:
        for listener in await self.store.list_listeners():
            if listener.kind == ListenerKind.WEBSOCKET and listener.address == path:
                return listener
        return None

    async def delete(self, listener: ListenerRecord, reason: str) -> bool:
        """Delete and tell its feed clients (on any worker), which then disconnect."""
        deleted = await self.store.delete_listener(listener.id)
        if deleted:
            await self.broker.publish(
                listener_channel(listener.id),
                {"type": LISTENER_DELETED, "listener_id": listener.id, "reason": reason},
            )
            log.info("listener deleted", listener=listener.id, reason=reason)
        return deleted

    async def touch(self, listener_id: str) -> bool:
        """A feed client is here: push the reclaim deadline back. False once it is gone."""
        listener = await self.store.get_listener(listener_id)
        if listener is None:
            return False
        await self.store.save_listener(listener.model_copy(update={"last_seen_at": time.time()}))
        return True

    async def sweep(self, now: float | None = None) -> int:
        """Delete listeners idle past their timeout; returns how many."""
        now = time.time() if now is None else now
        reclaimed = 0
        for listener in await self.store.list_listeners():
            idle = now - listener.last_seen_at
            if listener.idle_timeout > 0 and idle > listener.idle_timeout:
                reclaimed += await self.delete(listener, "idle")
        return reclaimed

    async def sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("listener sweep failed; trying again next interval")
