"""Telemetry settings, read like every other voxline setting (`VOXLINE_` prefix, then `.env`).

Kept apart from `voxline.settings.Settings` so metrics and traces can be configured (and
tested) without touching the settings everyone else edits; the fields and the resolution order
are the same. Traces themselves are configured by the standard `OTEL_*` variables
(`telemetry/tracing.py`); only what OpenTelemetry has no word for lives here.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class TelemetrySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOXLINE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # `/metrics` at all; off: 404, as if the route did not exist.
    metrics_enabled: bool = True
    # A Bearer token for scrapers, so Prometheus needs no API key (which can approve tool
    # calls). The bootstrap `VOXLINE_API_KEY` is accepted too.
    metrics_token: SecretStr | None = None
    # A client on this machine talking to it directly (loopback peer, no forwarding headers,
    # loopback Host) may scrape without a token: a sidecar or a node agent. Off: token always.
    metrics_loopback_open: bool = True
    # Transcript text (what the caller said, what the agent answered, tool arguments and
    # results, error messages) on spans. Off by default: traces often leave the trust boundary
    # that the conversation store sits in.
    trace_content: bool = False
