"""Every Prometheus metric voxline exports, made once per process on first use.

Why lazily: `prometheus_client` decides at the moment a metric's value is created whether it
lives in this process's memory or in a per-process file under `PROMETHEUS_MULTIPROC_DIR`
(`serve --workers N`, where any worker may answer a scrape for all of them). The CLI sets that
directory after modules that count things were already imported, so nothing may be created at
import time; `get()` makes them all the first time something is counted, after re-reading the
environment.

Why a no-op fallback: `prometheus-client` is an optional extra (`voxline[ops]`). Without it,
`get()` returns objects that accept the same calls and do nothing, so the providers, the sync and
the session observers never need to know.

Names follow Prometheus conventions (`_total` counters, `_seconds` histograms); labels are the
bounded ones of `telemetry.labels` only.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

VOICE_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
FAST_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 3.0, 5.0, 10.0)
TOOL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Imported when the first metric is made, not here: the CLI and the providers import this.
AVAILABLE = importlib.util.find_spec("prometheus_client") is not None


class Noop:
    """Stands in for any metric or labelled child when prometheus-client is not installed."""

    def labels(self, *_: object, **__: object) -> Noop:
        return self

    def inc(self, *_: object) -> None:
        return None

    def dec(self, *_: object) -> None:
        return None

    def set(self, *_: object) -> None:
        return None

    def observe(self, *_: object) -> None:
        return None


@dataclass(frozen=True)
class Metrics:
    workers: Any
    sessions_live: Any
    sessions: Any
    turns: Any
    replies: Any
    interruptions: Any
    errors: Any
    tool_calls: Any
    tool_duration: Any
    approvals_requested: Any
    approvals_resolved: Any
    llm_ttft: Any
    llm_duration: Any
    llm_tokens: Any
    voice_to_voice: Any
    end_of_turn: Any
    stt_latency: Any
    tts_first_audio: Any
    provider_requests: Any
    provider_failures: Any
    fallbacks: Any
    broker_reconnects: Any
    sync_lag: Any
    sync_in_progress: Any
    dropped: Any


_lock = threading.Lock()
_metrics: Metrics | None = None


def multiprocess() -> bool:
    """Whether metrics live in per-process files (a directory is configured)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def get() -> Metrics:
    """The process's metrics, made on first call (see the module docstring)."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _build() if AVAILABLE else _noops()
    return _metrics


def _noops() -> Metrics:
    noop = Noop()
    return Metrics(**{name: noop for name in Metrics.__dataclass_fields__})


def _build() -> Metrics:
    import prometheus_client
    from prometheus_client import values

    # The value class was chosen when prometheus_client was imported; the CLI may have set the
    # multiprocess directory since (and nothing was created before this point).
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    counter, gauge, histogram = (
        prometheus_client.Counter,
        prometheus_client.Gauge,
        prometheus_client.Histogram,
    )
    where = ("agent", "channel")
    return Metrics(
        workers=gauge(
            "voxline_workers", "Server processes up (one per worker).", multiprocess_mode="livesum"
        ),
        sessions_live=gauge(
            "voxline_sessions_live",
            "Live sessions (calls, browser sockets, SMS exchanges, text sessions) right now.",
            where,
            multiprocess_mode="livesum",
        ),
        sessions=counter("voxline_sessions", "Sessions opened.", where),
        turns=counter("voxline_turns", "User turns taken (what a caller said or typed).", where),
        replies=counter("voxline_replies", "Replies by how they ended.", (*where, "outcome")),
        interruptions=counter(
            "voxline_interruptions",
            "Replies cut short by the caller (barge-in, or new input mid-reply).",
            (*where, "kind"),
        ),
        errors=counter(
            "voxline_session_errors", "Errors a session reported, by where.", (*where, "where")
        ),
        tool_calls=counter(
            "voxline_tool_calls", "Tool calls by tool and outcome.", ("agent", "tool", "outcome")
        ),
        tool_duration=histogram(
            "voxline_tool_duration_seconds",
            "Tool call duration, retries included.",
            ("tool",),
            buckets=TOOL_BUCKETS,
        ),
        approvals_requested=counter(
            "voxline_approvals_requested", "Tool calls held for a human.", ("agent", "tool")
        ),
        approvals_resolved=counter(
            "voxline_approvals_resolved",
            "Human decisions applied in a session.",
            ("agent", "decision"),
        ),
        llm_ttft=histogram(
            "voxline_llm_time_to_first_token_seconds",
            "Model request start to its first text or tool-call delta.",
            ("agent", "provider"),
            buckets=FAST_BUCKETS,
        ),
        llm_duration=histogram(
            "voxline_llm_request_duration_seconds",
            "Model request start to end of stream.",
            ("agent", "provider"),
            buckets=VOICE_BUCKETS,
        ),
        llm_tokens=counter(
            "voxline_llm_tokens", "Tokens reported by providers.", ("provider", "direction")
        ),
        voice_to_voice=histogram(
            "voxline_voice_to_voice_seconds",
            "End of the caller's speech to the first bot audio handed to the channel.",
            where,
            buckets=VOICE_BUCKETS,
        ),
        end_of_turn=histogram(
            "voxline_end_of_turn_delay_seconds",
            "Silence waited before deciding the caller had finished.",
            where,
            buckets=VOICE_BUCKETS,
        ),
        stt_latency=histogram(
            "voxline_stt_latency_seconds",
            "End of turn decided to final transcript ready.",
            where,
            buckets=FAST_BUCKETS,
        ),
        tts_first_audio=histogram(
            "voxline_tts_time_to_first_audio_seconds",
            "First model token to first synthesised audio (includes the first sentence).",
            where,
            buckets=FAST_BUCKETS,
        ),
        provider_requests=counter(
            "voxline_provider_requests", "Requests sent to providers.", ("role", "provider")
        ),
        provider_failures=counter(
            "voxline_provider_failures", "Provider requests that failed.", ("role", "provider")
        ),
        fallbacks=counter(
            "voxline_llm_fallbacks",
            "Fall-overs to the next LLM of a chain, by the provider that failed.",
            ("provider",),
        ),
        broker_reconnects=counter(
            "voxline_broker_reconnects", "Event broker connections restored.", ("broker",)
        ),
        sync_lag=histogram(
            "voxline_turn_sync_lag_seconds",
            "A change to a conversation's turns until the store has it (write-behind lag).",
            buckets=SYNC_BUCKETS,
        ),
        sync_in_progress=gauge(
            "voxline_turn_sync_in_progress",
            "Write-behind batches waiting for the store (stays up while storage is down).",
            multiprocess_mode="livesum",
        ),
        dropped=counter(
            "voxline_events_dropped",
            "Events given up under load, by where (debug feed queue, broker subscribers).",
            ("source",),
        ),
    )
