"""`/api/models`: which `llm` values an agent can use on this server, from what is installed and
which keys are configured. Nothing is fetched from providers: the answer must not depend on
(or leak traffic to) a third party."""

from __future__ import annotations

import importlib.util

from fastapi import APIRouter, Depends

from voxline.server.api.context import Api, authorized
from voxline.server.api.errors import error_responses
from voxline.server.api.models import ModelsOut, ProviderOut
from voxline.settings import Settings

router = APIRouter(
    tags=["models"], dependencies=[Depends(authorized)], responses=error_responses(401, 429)
)


def providers(settings: Settings) -> list[ProviderOut]:
    found = [
        ProviderOut(
            provider="local",
            available=importlib.util.find_spec("xllamacpp") is not None,
            spec="local",
            models=["local"],
            note="runs in-process; needs the local extra: pip install 'voxline[local]'",
        ),
        ProviderOut(
            provider="openai-compatible",
            available=True,
            spec="openai-compatible:BASE_URL#MODEL",
            models=["openai-compatible:http://127.0.0.1:8000/v1#qwen2.5"],
            note="any server speaking OpenAI's Chat Completions (vLLM, llama.cpp, Ollama)",
        ),
        ProviderOut(
            provider="fake",
            available=True,
            spec="fake:REPLY",
            models=["fake:Hello from a scripted model."],
            note="always answers REPLY: for tests and demos",
        ),
    ]
    if settings.openai_api_key is not None:
        found.append(
            ProviderOut(
                provider="openai",
                available=True,
                spec="openai:MODEL",
                models=["openai:gpt-4.1-mini", "openai:gpt-4.1", "openai:gpt-4o-mini"],
            )
        )
    if settings.anthropic_api_key is not None:
        found.append(
            ProviderOut(
                provider="anthropic",
                available=True,
                spec="anthropic:MODEL",
                models=["anthropic:claude-sonnet-4-5", "anthropic:claude-haiku-4-5"],
            )
        )
    return found


@router.get("/models")
async def list_models(api: Api) -> ModelsOut:
    """Models an agent's `llm` can name here; `a,b` falls back from a to b."""
    settings = api.hub.settings
    return ModelsOut(default=settings.llm, providers=providers(settings))
