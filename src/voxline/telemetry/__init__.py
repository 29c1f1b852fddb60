"""Operations telemetry: Prometheus metrics, OpenTelemetry traces, trace ids in logs.

Everything here watches; nothing here is on the reply path. Sessions are observed through the
events they already emit (`session_metrics`, `spans`), the server's lifecycle through
`LiveSessions.observers` (attached by `server/metrics_routes.py`), and the few places with no
session to observe (providers, the broker, the turn sync) call one-line `counters`. The package
imports no optional dependency at import time: without the `ops` extra, metrics are no-ops and
tracing is off. This module imports nothing, so providers can import `counters` cheaply and
without import cycles. docs/operations.md says what to scrape and alert on.
"""
