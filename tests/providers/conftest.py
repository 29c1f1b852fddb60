"""Fixtures shared by the provider tests: a loopback Chat Completions server, a client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.providers.chat_server import ChatServer
from voxline.providers.llm.openai_compat import OpenAICompatibleLLM


@pytest.fixture
async def server() -> AsyncIterator[ChatServer]:
    async with ChatServer() as running:
        yield running


@pytest.fixture
async def llm(server: ChatServer) -> AsyncIterator[OpenAICompatibleLLM]:
    model = OpenAICompatibleLLM("test-model", base_url=server.base_url, max_retries=0)
    yield model
    await model.aclose()
