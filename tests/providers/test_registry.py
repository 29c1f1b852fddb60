"""create_llm: every spec prefix, keys from Settings, and actionable errors."""

from __future__ import annotations

import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.providers.chat_server import SSE, ChatServer, text_reply
from voxline.providers.llm import registry
from voxline.providers.llm.anthropic import AnthropicLLM
from voxline.providers.llm.base import (
    LLM,
    ChatMessage,
    ConfigurationError,
    LLMRequest,
    ToolDefinition,
    complete,
)
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.providers.llm.fallback import FallbackLLM
from voxline.providers.llm.openai_compat import OpenAICompatibleLLM
from voxline.settings import Settings

REQUEST = LLMRequest(messages=[ChatMessage(role="user", content="hello")])
_ENV = (
    "OPENAI_API_KEY",
    "VOXLINE_OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "VOXLINE_OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "VOXLINE_ANTHROPIC_API_KEY",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key from the developer's shell or a stray `.env` may leak into these tests."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))


@pytest.fixture
async def server() -> AsyncIterator[ChatServer]:
    async with ChatServer() as running:
        yield running


async def test_fake_has_a_default_reply_and_takes_one_from_the_spec() -> None:
    assert isinstance(registry.create_llm("fake", Settings()), FakeLLM)
    assert (await complete(registry.create_llm("fake"), REQUEST)).text
    assert (await complete(registry.create_llm("fake:Good morning"), REQUEST)).text == (
        "Good morning"
    )


async def test_openai_uses_key_and_base_url_from_settings(server: ChatServer) -> None:
    server.add(text_reply("hi"))
    settings = Settings(openai_api_key="sk-from-settings", openai_base_url=server.base_url)

    llm = registry.create_llm("openai:gpt-test", settings, max_retries=0)

    assert isinstance(llm, OpenAICompatibleLLM)
    assert llm.label == "openai:gpt-test"
    assert (await complete(llm, REQUEST)).text == "hi"
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-settings"
    assert server.requests[0].body["model"] == "gpt-test"
    await llm.aclose()


async def test_openai_does_not_parse_tool_calls_out_of_text(server: ChatServer) -> None:
    text = '{"name": "get_hours", "arguments": {}}'
    server.add(text_reply(text))
    settings = Settings(openai_api_key="sk", openai_base_url=server.base_url)
    llm = registry.create_llm("openai:gpt-test", settings, max_retries=0)
    request = LLMRequest(
        messages=REQUEST.messages,
        tools=[ToolDefinition(name="get_hours", description="", parameters={"type": "object"})],
    )

    result = await complete(llm, request)

    assert (result.text, result.tool_calls) == (text, [])
    await llm.aclose()


async def test_environment_key_wins(monkeypatch: pytest.MonkeyPatch, server: ChatServer) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    server.add(text_reply("hi"))

    llm = registry.create_llm(
        "openai:gpt-test", Settings(openai_base_url=server.base_url), max_retries=0
    )
    await complete(llm, REQUEST)

    assert server.requests[0].headers["authorization"] == "Bearer sk-from-env"
    await llm.aclose()


def test_openai_without_key_says_which_variable_to_set() -> None:
    with pytest.raises(ConfigurationError, match="set OPENAI_API_KEY or VOXLINE_OPENAI_API_KEY"):
        registry.create_llm("openai:gpt-test", Settings())


def test_openai_without_model() -> None:
    with pytest.raises(ConfigurationError, match=r"openai:gpt-4\.1-mini"):
        registry.create_llm("openai", Settings(openai_api_key="sk"))


async def test_openai_compatible_never_sends_the_openai_key(server: ChatServer) -> None:
    server.add(text_reply("local answer"))
    settings = Settings(openai_api_key="sk-secret")

    llm = registry.create_llm(f"openai-compatible:{server.base_url}#qwen2.5", settings)

    assert (await complete(llm, REQUEST)).text == "local answer"
    assert llm.label == "openai-compatible:qwen2.5"
    assert server.requests[0].body["model"] == "qwen2.5"
    assert server.requests[0].headers["authorization"] == "Bearer not-needed"
    await llm.aclose()


@pytest.mark.parametrize(
    "spec",
    ["openai-compatible:http://127.0.0.1:8000/v1", "openai-compatible:127.0.0.1:8000#m"],
)
def test_openai_compatible_needs_url_and_model(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="openai-compatible:http://"):
        registry.create_llm(spec, Settings())


async def test_anthropic_uses_key_from_settings(server: ChatServer) -> None:
    server.add(SSE([("message_stop", {"type": "message_stop"})]))
    llm = registry.create_llm(
        "anthropic:claude-test", Settings(anthropic_api_key="sk-ant"), base_url=server.root_url
    )

    assert isinstance(llm, AnthropicLLM)
    assert llm.label == "anthropic:claude-test"
    await complete(llm, REQUEST)
    assert server.requests[0].headers["authorization"] == "Bearer sk-ant"
    assert server.requests[0].body["model"] == "claude-test"
    await llm.aclose()


def test_anthropic_without_key() -> None:
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        registry.create_llm("anthropic:claude-test", Settings())


def test_local_without_its_module_or_extra_explains_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "voxline.providers.llm.local", None)
    with pytest.raises(ConfigurationError) as caught:
        registry.create_llm("local", Settings())
    assert str(caught.value) == (
        "the local model needs the local extra: pip install 'voxline[local]'"
    )


def test_local_missing_dependency_inside_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    def create_local_llm(model: str | None, settings: Settings) -> LLM:
        raise ModuleNotFoundError("No module named 'xllamacpp'", name="xllamacpp")

    _install_local(monkeypatch, create_local_llm)
    with pytest.raises(ConfigurationError, match=r"voxline\[local\]"):
        registry.create_llm("local", Settings())


@pytest.mark.parametrize(("spec", "model"), [("local", None), ("local:qwen-1.5b", "qwen-1.5b")])
def test_local_delegates_to_the_local_module(
    monkeypatch: pytest.MonkeyPatch, spec: str, model: str | None
) -> None:
    calls: list[tuple[str | None, Settings]] = []
    made = FakeLLM(label="local")

    def create_local_llm(model: str | None, settings: Settings) -> LLM:
        calls.append((model, settings))
        return made

    _install_local(monkeypatch, create_local_llm)
    settings = Settings()

    assert registry.create_llm(spec, settings) is made
    assert calls == [(model, settings)]


def _install_local(monkeypatch: pytest.MonkeyPatch, factory: Any) -> None:
    module = types.ModuleType("voxline.providers.llm.local")
    setattr(module, "create_local_llm", factory)  # noqa: B010
    monkeypatch.setitem(sys.modules, "voxline.providers.llm.local", module)


async def test_comma_list_builds_a_fallback_in_order() -> None:
    def broken(argument: str, settings: Settings, /, **options: Any) -> LLM:
        return FakeLLM(default=FakeReply(fail_before=ConnectionError("down")), label="broken")

    registry.register_llm("broken", broken)

    llm = registry.create_llm("broken, fake:backup answer", Settings())

    assert isinstance(llm, FallbackLLM)
    assert llm.label == "fallback(broken,fake)"
    assert (await complete(llm, REQUEST)).text == "backup answer"


def test_register_llm_passes_argument_settings_and_options() -> None:
    seen: list[tuple[str, Settings, dict[str, Any]]] = []

    def custom(argument: str, settings: Settings, /, **options: Any) -> LLM:
        seen.append((argument, settings, options))
        return FakeLLM(label=f"custom:{argument}")

    registry.register_llm("custom", custom)
    settings = Settings()

    assert registry.create_llm("custom:big-model", settings, temperature=0.1).label == (
        "custom:big-model"
    )
    assert seen == [("big-model", settings, {"temperature": 0.1})]


@pytest.mark.parametrize("prefix", ["", "a:b", "a,b", " a"])
def test_register_llm_rejects_prefixes_that_cannot_be_parsed(prefix: str) -> None:
    with pytest.raises(ValueError, match="plain word"):
        registry.register_llm(prefix, registry._FACTORIES["fake"])


def test_unknown_prefix_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        registry.create_llm("gemini:pro", Settings())
    message = str(caught.value)
    for prefix in ("anthropic", "fake", "local", "openai", "openai-compatible"):
        assert prefix in message


@pytest.mark.parametrize("spec", ["", "fake,", ",fake"])
def test_empty_spec(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="empty LLM spec"):
        registry.create_llm(spec, Settings())


def test_unknown_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"fake:.*colour"):
        registry.create_llm("fake", Settings(), colour="blue")
