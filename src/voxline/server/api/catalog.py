"""`/api/models`: what an agent defined over the API may name on this server, from the operator's
allow-list (`voxline.agents.policy`), what is installed and which keys are configured. It is the
same list the policy checks agents against, so what it shows is what `POST /api/agents` accepts.
Nothing is fetched from providers: the answer must not depend on (or leak traffic to) a third
party, and URLs are shown without credentials."""

from __future__ import annotations

import importlib.util

from fastapi import APIRouter, Depends
from pydantic import Field

from voxline.agents.policy import AllowList, shown_spec
from voxline.server.api.context import Api, authorized
from voxline.server.api.errors import error_responses
from voxline.server.api.models import ModelsOut, ProviderOut
from voxline.settings import Settings

router = APIRouter(
    tags=["models"], dependencies=[Depends(authorized)], responses=error_responses(401, 429)
)

_EXAMPLES = {
    "openai": ["openai:gpt-4.1-mini", "openai:gpt-4.1", "openai:gpt-4o-mini"],
    "anthropic": ["anthropic:claude-sonnet-4-5", "anthropic:claude-haiku-4-5"],
    "fake": ["fake", "fake:Hello from a scripted model."],
}
_SPECS = {
    "local": "local",
    "openai": "openai:MODEL",
    "anthropic": "anthropic:MODEL",
    "openai-compatible": "openai-compatible:BASE_URL#MODEL",
    "fake": "fake:REPLY",
}
_NOTES = {
    "local": "runs in-process; needs the local extra: pip install 'voxline[local]'",
    "openai-compatible": "any server speaking OpenAI's Chat Completions (vLLM, llama.cpp, "
    "Ollama), under one of `base_urls`",
    "fake": "always answers REPLY: for tests and demos",
}


class CatalogOut(ModelsOut):
    """The LLM providers, plus the speech choices and base URLs an agent may name."""

    stt: list[str] = Field(description="`stt` values allowed here (`*` matches any text).")
    tts: list[str] = Field(description="`tts` values allowed here.")
    voices: list[str] = Field(description="`voice` values allowed here.")
    base_urls: list[str] = Field(
        description="Base URLs an `openai-compatible:BASE_URL#MODEL` spec may be at or under."
    )


def _available(provider: str, settings: Settings) -> bool:
    if provider == "local":
        return importlib.util.find_spec("xllamacpp") is not None
    if provider == "openai":
        return settings.openai_api_key is not None
    if provider == "anthropic":
        return settings.anthropic_api_key is not None
    return True


def providers(settings: Settings, allow: AllowList | None = None) -> list[ProviderOut]:
    """One entry per LLM provider the allow-list names, in the allow-list's order. A pattern
    (`openai:*`) is shown with examples; exact entries are listed as they are."""
    allow = allow if allow is not None else AllowList.from_settings(settings)
    grouped: dict[str, list[str]] = {}
    for entry in allow.llms:
        grouped.setdefault(entry.partition(":")[0], []).append(entry)
    found = []
    for provider, entries in grouped.items():
        models: list[str] = []
        for entry in entries:
            if "*" not in entry:
                models.append(shown_spec(entry))
            elif provider == "openai-compatible":
                models += [f"openai-compatible:{url}#MODEL" for url in allow.shown_base_urls()]
            else:
                models += _EXAMPLES.get(provider, [entry])
        found.append(
            ProviderOut(
                provider=provider,
                available=_available(provider, settings),
                spec=_SPECS.get(provider, f"{provider}:ARGUMENT"),
                models=list(dict.fromkeys(models)),
                note=_NOTES.get(provider),
            )
        )
    return found


@router.get("/models", response_model=CatalogOut)
async def list_models(api: Api) -> CatalogOut:
    """What an agent's `llm`, `stt`, `tts` and `voice` may name here; `a,b` falls back from a to
    b. Anything else is refused with a 422 when the agent is created or replaced."""
    settings = api.hub.settings
    allow = AllowList.from_settings(settings)
    return CatalogOut(
        default=",".join(shown_spec(part) for part in settings.llm.split(",")),
        providers=providers(settings, allow),
        stt=list(allow.stt),
        tts=list(allow.tts),
        voices=list(allow.voices),
        base_urls=allow.shown_base_urls(),
    )
