"""Realtime specs: `openai-realtime:MODEL` and `openai-realtime:ws://HOST:PORT/v1#MODEL`.

A Realtime spec sits in the agent's `llm` field, alone or first in a fallback list of text
models (`openai-realtime:gpt-realtime,openai:gpt-4.1-mini`): voice channels that run a Realtime
model use it, text channels the rest (see `voice_llm.py`). The LLM registry knows the prefix
and calls `voice_only` here, so a session's (text) model can be built from such a spec.

Where the socket goes and which key it carries follow the LLM registry's rule that a key goes
only where it was configured for: `openai-realtime:MODEL` connects to
`VOXLINE_OPENAI_REALTIME_BASE_URL` (default: OpenAI's, or `OPENAI_BASE_URL` as ws/wss) with
`VOXLINE_OPENAI_REALTIME_API_KEY` or else the OpenAI key; a spec that names a URL gets the
Realtime key only when the URL is under `VOXLINE_OPENAI_REALTIME_BASE_URL`, and never the
OpenAI key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import structlog

from voxline.providers.llm.base import LLM, ConfigurationError
from voxline.providers.llm.registry import base_url_within, shown_url
from voxline.providers.realtime.voice_llm import RealtimeVoiceLLM
from voxline.settings import Settings

if TYPE_CHECKING:
    from voxline.providers.realtime.client import RealtimeClient

log = structlog.get_logger("voxline.providers.realtime")

REALTIME_PREFIX = "openai-realtime"
OPENAI_REALTIME_URL = "wss://api.openai.com/v1"
_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


@dataclass(frozen=True)
class RealtimeTarget:
    """Where one Realtime connection goes: the full socket URL, the model and the key."""

    url: str
    model: str
    api_key: str | None = None

    @property
    def label(self) -> str:
        return f"{REALTIME_PREFIX}:{self.model}"

    def shown(self) -> str:
        return shown_url(self.url)


def realtime_part(spec: str | None) -> str | None:
    """The Realtime part of an `llm` spec, or None. Only a first part counts: the parts after
    it are the text models other channels fall back to, and a Realtime model after a text
    model would never be reached by a voice call."""
    first = (spec or "").split(",")[0].strip()
    return first if first.partition(":")[0] == REALTIME_PREFIX else None


def is_realtime_spec(spec: str | None) -> bool:
    """Whether an agent's `llm` names a Realtime (speech-to-speech) model."""
    return realtime_part(spec) is not None


def split_realtime(part: str) -> tuple[str | None, str]:
    """(URL or None, model) of one `openai-realtime:` spec."""
    argument = part.strip().partition(":")[2].strip()
    if "://" not in argument:
        return None, argument
    url, _, model = argument.rpartition("#")
    return url, model


def http_form(url: str) -> str:
    """A ws/wss URL as the http/https URL of the same server, for base-URL comparisons (the
    allow-list and key rules are written for http URLs). Other schemes come back unchanged."""
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    return urlunsplit(parts._replace(scheme=scheme)) if scheme else url


def socket_url(base: str, model: str) -> str:
    """`base` + `/realtime?model=…` as the official SDK builds it (protocols.md §4.1): the
    scheme mapped to ws/wss, a trailing slash dropped, `/realtime` appended unless present."""
    parts = urlsplit(socket_base(base))
    path = parts.path.rstrip("/")
    if not path.endswith("/realtime"):
        path += "/realtime"
    query = f"model={quote(model, safe='')}"
    if parts.query:
        query = f"{parts.query}&{query}"
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def socket_base(base: str) -> str:
    """An http(s) base URL as the ws(s) URL of the same server (the SDK's mapping)."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
    return urlunsplit(parts._replace(scheme=scheme))


def realtime_target(part: str, settings: Settings) -> RealtimeTarget:
    """Resolve one Realtime spec against the settings; `ConfigurationError` says what is
    missing in one line."""
    url, model = split_realtime(part)
    if not model:
        raise ConfigurationError(
            f"{REALTIME_PREFIX} needs a model: {REALTIME_PREFIX}:gpt-realtime or "
            f"{REALTIME_PREFIX}:ws://127.0.0.1:8000/v1#MODEL"
        )
    realtime_key = _secret(settings.openai_realtime_api_key)
    configured = settings.openai_realtime_base_url
    if url is None:
        from_openai = socket_base(settings.openai_base_url) if settings.openai_base_url else None
        base = configured or from_openai or OPENAI_REALTIME_URL
        key = realtime_key or _secret(settings.openai_api_key)
        if key is None and base == OPENAI_REALTIME_URL:
            raise ConfigurationError(
                f"{REALTIME_PREFIX}:{model} needs OPENAI_API_KEY (or "
                "VOXLINE_OPENAI_REALTIME_API_KEY)"
            )
        return RealtimeTarget(socket_url(base, model), model, key)
    if urlsplit(url).scheme.lower() not in _SCHEMES:
        raise ConfigurationError(
            f"{REALTIME_PREFIX} needs a ws://, wss://, http:// or https:// URL, got "
            f"{shown_url(url)}"
        )
    key = None
    if realtime_key is not None:
        if configured and base_url_within(http_form(url), http_form(configured)):
            key = realtime_key
        else:
            log.warning(
                "VOXLINE_OPENAI_REALTIME_API_KEY withheld: it is only sent to "
                "VOXLINE_OPENAI_REALTIME_BASE_URL",
                url=shown_url(url),
            )
    return RealtimeTarget(socket_url(url, model), model, key)


def create_realtime(spec: str, settings: Settings | None = None, **options: Any) -> RealtimeClient:
    """A (not yet connected) client for the Realtime part of `spec`; `options` go to
    `RealtimeClient` (its session configuration, the history to re-seed, limits)."""
    from voxline.providers.realtime.client import RealtimeClient

    settings = settings if settings is not None else Settings()
    part = realtime_part(spec)
    if part is None:
        raise ConfigurationError(f"{spec!r} names no {REALTIME_PREFIX}: model")
    options.setdefault("queue_size", settings.realtime_queue_size)
    options.setdefault("keepalive", settings.realtime_keepalive)
    options.setdefault("reconnect_attempts", settings.realtime_reconnect_attempts)
    options.setdefault("max_backoff", settings.realtime_max_backoff)
    return RealtimeClient(realtime_target(part, settings), **options)


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def voice_only(argument: str, settings: Settings, /, **options: Any) -> LLM:
    """What `create_llm` makes of a Realtime spec: the session's stand-in text model."""
    return RealtimeVoiceLLM(f"{REALTIME_PREFIX}:{argument.rpartition('#')[2] or argument}")
