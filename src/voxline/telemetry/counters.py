"""One-line counters for code that has no session to observe: providers, the broker, the sync.

Provider requests, failures and fall-overs happen inside the LLM clients, broker reconnects inside
the broker, write-behind lag inside the turn sync; none of them emit session events. Each place
calls one function here, in one line, so the instrumented code stays readable and the cost is a
dictionary lookup and an increment. Nothing here raises into the caller: a metric must never
break the thing it measures. Without prometheus-client installed every call is a no-op.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable

from voxline.telemetry import labels, metrics


def provider_request(role: str, provider: str) -> None:
    """A request sent to a provider (`role`: llm, stt, tts)."""
    with contextlib.suppress(Exception):  # a metric must never break what it measures
        metrics.get().provider_requests.labels(role, labels.providers(provider)).inc()


def provider_failure(role: str, provider: str) -> None:
    """A provider request that failed (connection, HTTP status, error inside the stream)."""
    with contextlib.suppress(Exception):
        metrics.get().provider_failures.labels(role, labels.providers(provider)).inc()


def fallback(failed_provider: str) -> None:
    """A fallback chain moved on from `failed_provider` to the next one."""
    with contextlib.suppress(Exception):
        metrics.get().fallbacks.labels(labels.providers(failed_provider)).inc()


def dropped(source: str, count: int = 1) -> None:
    """Things given up under load on a live path (`source`: a fixed name, e.g. an outbox)."""
    with contextlib.suppress(Exception):
        metrics.get().dropped.labels(source).inc(count)


def broker_reconnect(broker: str) -> None:
    """The event broker got its connection back after losing it."""
    with contextlib.suppress(Exception):
        metrics.get().broker_reconnects.labels(broker).inc()


async def write_behind(push: Awaitable[object], *, waited: float = 0.0) -> None:
    """Await one write-behind `push` (retries included), counting it in progress meanwhile,
    and observe `waited` (the coalescing window already slept) plus its duration as the lag.
    A store outage shows as a batch in progress that does not end, then as a long lag."""
    started = time.monotonic()
    try:
        gauge = metrics.get().sync_in_progress
        gauge.inc()
    except Exception:  # pragma: no cover
        await push
        return
    try:
        await push
    finally:
        gauge.dec()
    with contextlib.suppress(Exception):
        metrics.get().sync_lag.observe(waited + time.monotonic() - started)
