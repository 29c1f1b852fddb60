"""Build an LLM from a spec string such as `openai:gpt-4.1-mini` or `anthropic:…,local`.

A spec is `PREFIX[:ARGUMENT]`; a comma-separated list of specs becomes a `FallbackLLM` in that
order. Keys and base URLs come from `Settings`, so a spec never carries a secret. Applications add
their own prefixes with `register_llm`.

A spec may name a URL (`openai-compatible:URL#MODEL`), and whoever wrote the spec is not always
whoever configured the key, so a configured key goes only to the base URL it was configured for:
`VOXLINE_OPENAI_COMPATIBLE_API_KEY` is sent to URLs under `VOXLINE_OPENAI_COMPATIBLE_BASE_URL`
and nowhere else. `base_url_within` is that comparison; the API's agent policy uses it too.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple, Protocol, cast
from urllib.parse import unquote, urlsplit

import structlog
from pydantic import SecretStr

from voxline.guardrails.redact import safe_url
from voxline.providers.llm.base import LLM, ConfigurationError, MissingKeyError
from voxline.settings import Settings


class LLMFactory(Protocol):
    """Makes an LLM from the text after `PREFIX:` (empty when there is none)."""

    def __call__(self, argument: str, settings: Settings, /, **options: Any) -> LLM: ...


log = structlog.get_logger("voxline.providers")

_DEFAULT_FAKE_REPLY = "Hello! This is the fake model speaking."
_LOCAL_MODULE = "voxline.providers.llm.local"
_LOCAL_EXTRA_HINT = "the local model needs the local extra: pip install 'voxline[local]'"


def _fake(argument: str, settings: Settings, /, **options: Any) -> LLM:
    from voxline.providers.llm.fake import FakeLLM, FakeReply

    return FakeLLM(default=FakeReply(text=argument or _DEFAULT_FAKE_REPLY), **options)


def _openai(argument: str, settings: Settings, /, **options: Any) -> LLM:
    from voxline.providers.llm.openai_compat import OpenAICompatibleLLM

    if not argument:
        raise ConfigurationError("openai needs a model name, e.g. openai:gpt-4.1-mini")
    options.setdefault("base_url", settings.openai_base_url)
    options.setdefault("api_key", _secret(settings.openai_api_key))
    options.setdefault("label", f"openai:{argument}")
    # OpenAI's own models emit structured tool calls, even behind a proxy's base URL.
    options.setdefault("parse_text_tool_calls", False)
    return OpenAICompatibleLLM(argument, **options)


def _openai_compatible(argument: str, settings: Settings, /, **options: Any) -> LLM:
    from voxline.providers.llm.openai_compat import OpenAICompatibleLLM

    url, _, model = argument.rpartition("#")
    if not url.startswith(("http://", "https://")) or not model:
        raise ConfigurationError(
            "openai-compatible needs a base URL and a model, "
            "e.g. openai-compatible:http://127.0.0.1:8000/v1#qwen2.5"
        )
    # The OpenAI key is deliberately not sent here: it must not leak to a third-party server.
    # The compatible key goes only where it was configured for; a caller that means to send a
    # key elsewhere passes `api_key=` itself.
    key = settings.openai_compatible_api_key
    if key is not None and "api_key" not in options:
        configured = settings.openai_compatible_base_url
        if configured and base_url_within(url, configured):
            options["api_key"] = key.get_secret_value()
        else:
            log.warning(
                "VOXLINE_OPENAI_COMPATIBLE_API_KEY withheld: it is only sent to "
                "VOXLINE_OPENAI_COMPATIBLE_BASE_URL",
                url=shown_url(url),
                configured=shown_url(configured) if configured else None,
            )
    return OpenAICompatibleLLM(model, base_url=url, **options)


def _anthropic(argument: str, settings: Settings, /, **options: Any) -> LLM:
    from voxline.providers.llm.anthropic import AnthropicLLM

    if not argument:
        raise ConfigurationError("anthropic needs a model name, e.g. anthropic:claude-sonnet-4-5")
    options.setdefault("api_key", _secret(settings.anthropic_api_key))
    return AnthropicLLM(argument, **options)


def _local(argument: str, settings: Settings, /, **options: Any) -> LLM:
    # Imported on demand: the local extra is heavy and optional, and its module may import
    # (or lazily import) packages that are not installed.
    try:
        module = importlib.import_module(_LOCAL_MODULE)
        return cast(LLM, module.create_local_llm(argument or None, settings, **options))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("voxline") and exc.name != _LOCAL_MODULE:
            raise  # a bug inside voxline, not a missing extra
        raise ConfigurationError(_LOCAL_EXTRA_HINT) from exc


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


class BaseUrl(NamedTuple):
    """An http(s) URL reduced to what decides where a request goes."""

    scheme: str
    host: str
    port: int
    path: str  # percent-decoded, no trailing slash: "" for the root
    credentials: bool  # whether it had `user:password@`


_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_base_url(url: str) -> BaseUrl | None:
    """`url` normalised (scheme and host lower-cased, default port made explicit, trailing slash
    dropped), or None when it is not a plain http(s) base URL. Anything a server or a client
    library might read two ways is refused rather than normalised: a query or fragment, a
    backslash, whitespace, control or non-ASCII characters (hosts that IDNA would rewrite),
    empty or dot path segments (also percent-encoded)."""
    if not _plain(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host or parts.query or parts.fragment:
        return None
    if "?" in url or "#" in url:  # an empty query or fragment still changes what is requested
        return None
    path = unquote(parts.path)
    if not _plain(path) or "%" in path:  # double encoding: read differently by different servers
        return None
    path = path.removesuffix("/")
    segments = path.split("/")[1:] if path else []
    if any(segment in ("", ".", "..") for segment in segments):
        return None
    credentials = "@" in parts.netloc
    return BaseUrl(scheme, host, port or _DEFAULT_PORTS[scheme], path, credentials)


def _plain(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text and "\\" not in text


def base_url_within(url: str, base: str) -> bool:
    """Whether requests to `url` go to the server of `base` (same scheme, host and port), at or
    below its path. `url` must carry no credentials; `base` may (they are not compared)."""
    candidate, allowed = parse_base_url(url), parse_base_url(base)
    if candidate is None or allowed is None or candidate.credentials:
        return False
    if candidate[:3] != allowed[:3]:
        return False
    return candidate.path == allowed.path or candidate.path.startswith(allowed.path + "/")


def shown_url(url: str) -> str:
    """`url` fit for a log line or an error message: any `user:password@` masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an invalid URL)"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()


def _openai_realtime(argument: str, settings: Settings, /, **options: Any) -> LLM:
    """A speech-to-speech spec names no text model: its module makes the session's stand-in
    (imported on demand, so every entry point knows the prefix without loading it first)."""
    from voxline.providers.realtime.registry import voice_only

    return voice_only(argument, settings, **options)


_FACTORIES: dict[str, LLMFactory] = {
    "fake": _fake,
    "openai-realtime": _openai_realtime,
    "openai": _openai,
    "openai-compatible": _openai_compatible,
    "anthropic": _anthropic,
    "local": _local,
}


def llm_prefixes() -> list[str]:
    """The prefixes `create_llm` knows now (built-in and registered), sorted."""
    return sorted(_FACTORIES)


def register_llm(prefix: str, factory: LLMFactory) -> None:
    """Make `prefix[:ARGUMENT]` specs build LLMs with `factory` (replacing any earlier one)."""
    if not prefix or ":" in prefix or "," in prefix or prefix != prefix.strip():
        raise ValueError(f"an LLM prefix must be a plain word, got {prefix!r}")
    _FACTORIES[prefix] = factory


def create_llm(spec: str, settings: Settings | None = None, **options: Any) -> LLM:
    """Build the LLM that `spec` names; `options` go to every provider's constructor."""
    settings = settings if settings is not None else Settings()
    parts = [part.strip() for part in spec.split(",")]
    if not all(parts):
        raise ConfigurationError(f"empty LLM spec in {spec!r}; use e.g. openai:gpt-4.1-mini")
    if len(parts) > 1:
        from voxline.providers.llm.fallback import FallbackLLM

        chain = _create_chain(parts, settings, options)
        return chain[0] if len(chain) == 1 else FallbackLLM(chain)
    return _create_one(parts[0], settings, options)


_warned_skips: set[str] = set()


def _create_chain(parts: list[str], settings: Settings, options: dict[str, Any]) -> list[LLM]:
    """The fallback chain's LLMs. A part whose key is not set is skipped with one warning per
    process while others remain: `openai:…,local` is how one says "OpenAI when there is a key,
    the local model otherwise", and a server builds it for every call. Any other configuration
    error (an unknown prefix, a malformed spec) still fails, so a typo is never hidden."""
    chain: list[LLM] = []
    skipped: list[tuple[str, ConfigurationError]] = []
    for part in parts:
        try:
            chain.append(_create_one(part, settings, options))
        except MissingKeyError as exc:
            skipped.append((part, exc))
    if not chain:
        raise skipped[0][1]
    for part, reason in skipped:
        if part not in _warned_skips:
            _warned_skips.add(part)
            log.warning(f"{safe_url(part)} skipped in the fallback chain: {reason}")
    return chain


def _create_one(spec: str, settings: Settings, options: dict[str, Any]) -> LLM:
    prefix, _, argument = spec.partition(":")
    factory = _FACTORIES.get(prefix)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise ConfigurationError(
            f"unknown LLM {safe_url(spec)!r}; valid prefixes: {known} (or a comma-separated list)"
        )
    try:
        return factory(argument.strip(), settings, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigurationError(f"{prefix}: {exc}") from exc
