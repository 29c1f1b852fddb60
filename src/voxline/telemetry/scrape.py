"""Gauges read when `/metrics` is scraped, from state no event reports.

Pending approvals live in the store, shared by every worker, so any worker's count is the
fleet's (and no counter arithmetic could get it right across restarts); it is one indexed read
per scrape (every 15 s or so), under a short timeout, so a slow database cannot hold a scrape
up; whether that read worked is `voxline_store_reachable`, the store half of what `/health`
calls degraded (which still answers 200, so a status-code probe cannot see it). The broker's
health is this worker's view of it, the other half. A count that cannot be read is left out
rather than guessed: alert on the reachability gauge, not on a made-up zero.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog

from voxline.store.base import ApprovalStatus, EventBroker, Store

log = structlog.get_logger("voxline.telemetry")

STORE_TIMEOUT = 1.0


@dataclass(frozen=True)
class _Pending:
    count: int
    oldest_age: float


class ScrapeGauges:
    def __init__(self, store: Callable[[], Store], broker: Callable[[], EventBroker]) -> None:
        self._store = store
        self._broker = broker

    async def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import GaugeMetricFamily

        pending, reachable = await self._read_pending()
        healthy = getattr(self._broker(), "healthy", None)

        class Collector:
            def collect(self) -> Iterator[GaugeMetricFamily]:
                yield GaugeMetricFamily(
                    "voxline_store_reachable",
                    "1 when the store answered this scrape's read in time.",
                    value=int(reachable),
                )
                if pending is not None:
                    yield GaugeMetricFamily(
                        "voxline_approvals_pending",
                        "Tool calls waiting for a human decision (the store's count).",
                        value=pending.count,
                    )
                    yield GaugeMetricFamily(
                        "voxline_approvals_oldest_pending_seconds",
                        "Age of the oldest tool call waiting for a human (0: none).",
                        value=pending.oldest_age,
                    )
                if isinstance(healthy, bool):
                    yield GaugeMetricFamily(
                        "voxline_broker_healthy",
                        "1 while the event broker reaches its server (the scraped worker's view).",
                        value=int(healthy),
                    )

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector())
        return generate_latest(registry)

    async def _read_pending(self) -> tuple[_Pending | None, bool]:
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                records = await self._store().list_approvals(status=ApprovalStatus.PENDING)
        except Exception as exc:
            log.warning("metrics could not count pending approvals", error=type(exc).__name__)
            return None, False
        now = time.time()
        oldest = max((now - r.created_at for r in records), default=0.0)
        return _Pending(len(records), max(0.0, oldest)), True
