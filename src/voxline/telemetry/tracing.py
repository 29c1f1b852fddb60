"""OpenTelemetry tracing: off unless the standard `OTEL_*` variables turn it on.

Tracing is on when `OTEL_TRACES_EXPORTER` names `otlp` (or `console`), or when an OTLP endpoint
is set (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`) and the exporter
is not `none`; `OTEL_SDK_DISABLED=true` turns it off whatever else is set. Everything else the
SDK reads itself: the endpoint, headers and timeout (`OTEL_EXPORTER_OTLP_*`), the sampler
(`OTEL_TRACES_SAMPLER`), batching (`OTEL_BSP_*`) and the resource (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`; the service is called `voxline` unless they say otherwise). The
exporter is OTLP over HTTP/protobuf (`opentelemetry-exporter-otlp-proto-http`, in the `ops`
extra); gRPC is not shipped, so a `grpc` protocol is reported and HTTP used.

Which provider: one handed to `use_provider` (tests, an app embedding voxline); else a global
SDK provider some other code already installed; else one made here from the environment, once
per process, on first use (after `serve --workers` forked, so the export thread is the
worker's). Spans go through a batch processor, off the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog

log = structlog.get_logger("voxline.telemetry")

try:
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only without the `ops` extra
    AVAILABLE = False

SCOPE = "voxline"
_override: Any = None  # a TracerProvider set by use_provider
_own: Any = None  # the provider made here from the environment
_configured = False


def requested(env: Mapping[str, str] = os.environ) -> str | None:
    """The exporter the environment asks for (`otlp` or `console`), or None: tracing off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    if "none" in names:
        return None
    for name in names:
        if name in ("otlp", "console"):
            return name
    if names:
        log.warning("OTEL_TRACES_EXPORTER names no exporter voxline ships", exporters=names)
        return None
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return None


def use_provider(provider: Any) -> None:
    """Send voxline's spans to `provider` (an SDK `TracerProvider`); None undoes it."""
    global _override
    _override = provider


def tracer() -> Any:
    """voxline's tracer, or None when tracing is off (or the SDK is not installed)."""
    provider = current_provider()
    if provider is None:
        return None
    return provider.get_tracer(SCOPE, _version())


def current_provider() -> Any:
    if _override is not None:
        return _override
    if not AVAILABLE:
        return None
    installed = otel_trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):
        return installed
    return _from_environment()


def _from_environment() -> Any:
    global _own, _configured
    if _configured:
        return _own
    _configured = True
    exporter_name = requested()
    if exporter_name is None:
        return None
    try:
        exporter = _exporter(exporter_name)
    except Exception as exc:
        log.error("tracing is off: the span exporter could not be made", error=str(exc))
        return None
    provider = TracerProvider(resource=Resource.create(_default_resource()))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _own = provider
    log.info("tracing on", exporter=exporter_name)
    return provider


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol and protocol != "http/protobuf":
        log.warning("only OTLP over http/protobuf is shipped; using it", requested=protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _default_resource() -> dict[str, str]:
    """Attributes the environment does not set itself: what the service is called."""
    attributes = {"service.version": _version()}
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = "voxline"
    return attributes


def _version() -> str:
    try:
        return version("voxline")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


async def flush(within: float = 5.0) -> None:
    """Export what is buffered (shutdown), off the event loop; only the provider made here."""
    provider = _own
    if provider is not None:
        await asyncio.to_thread(provider.force_flush, int(within * 1000))
