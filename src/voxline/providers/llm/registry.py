"""Build an LLM from a spec string such as `openai:gpt-4.1-mini` or `anthropic:…,local`.

A spec is `PREFIX[:ARGUMENT]`; a comma-separated list of specs becomes a `FallbackLLM` in that
order. Keys and base URLs come from `Settings`, so a spec never carries a secret. Applications add
their own prefixes with `register_llm`.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, cast

from pydantic import SecretStr

from voxline.providers.llm.base import LLM, ConfigurationError
from voxline.settings import Settings


class LLMFactory(Protocol):
    """Makes an LLM from the text after `PREFIX:` (empty when there is none)."""

    def __call__(self, argument: str, settings: Settings, /, **options: Any) -> LLM: ...


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
    if settings.openai_compatible_api_key is not None:
        options.setdefault("api_key", _secret(settings.openai_compatible_api_key))
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


_FACTORIES: dict[str, LLMFactory] = {
    "fake": _fake,
    "openai": _openai,
    "openai-compatible": _openai_compatible,
    "anthropic": _anthropic,
    "local": _local,
}


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

        return FallbackLLM([_create_one(part, settings, options) for part in parts])
    return _create_one(parts[0], settings, options)


def _create_one(spec: str, settings: Settings, options: dict[str, Any]) -> LLM:
    prefix, _, argument = spec.partition(":")
    factory = _FACTORIES.get(prefix)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise ConfigurationError(
            f"unknown LLM {spec!r}; valid prefixes: {known} (or a comma-separated list)"
        )
    try:
        return factory(argument.strip(), settings, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigurationError(f"{prefix}: {exc}") from exc
