"""Realtime specs, keys and the allow-list; the client's outbox, keepalive and reconnects."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.providers.realtime_server import FakeRealtimeServer
from voxline import Agent, Session
from voxline.agents.policy import check_agent
from voxline.agents.spec import AgentSpec
from voxline.providers.llm.base import ConfigurationError, LLMRequest, complete
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.providers.llm.fallback import FallbackLLM
from voxline.providers.llm.registry import create_llm
from voxline.providers.realtime import events as wire
from voxline.providers.realtime.client import RealtimeClient, RealtimeConnectError
from voxline.providers.realtime.config import PCMU, RealtimeSessionConfig
from voxline.providers.realtime.registry import (
    RealtimeTarget,
    create_realtime,
    is_realtime_spec,
    realtime_target,
)
from voxline.providers.realtime.voice_llm import RealtimeVoiceLLM
from voxline.settings import Settings

LOCAL = "ws://127.0.0.1:9000/v1"


@pytest.fixture(autouse=True)
def no_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "VOXLINE_OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("VOXLINE_OPENAI_BASE_URL", "VOXLINE_OPENAI_REALTIME_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def settings(**values: Any) -> Settings:
    return Settings(llm="fake", **values)


def test_specs_name_a_model_or_a_server() -> None:
    assert is_realtime_spec("openai-realtime:gpt-realtime")
    assert is_realtime_spec(f"openai-realtime:{LOCAL}#m,openai:gpt-4.1-mini")
    assert not is_realtime_spec("openai:gpt-4.1-mini,openai-realtime:gpt-realtime")
    assert not is_realtime_spec(None)

    hosted = realtime_target("openai-realtime:gpt-realtime", settings(openai_api_key="sk-1"))
    assert hosted == RealtimeTarget(
        "wss://api.openai.com/v1/realtime?model=gpt-realtime", "gpt-realtime", "sk-1"
    )
    proxied = realtime_target(
        "openai-realtime:gpt-realtime",
        settings(openai_api_key="sk-1", openai_base_url="https://proxy.test/openai/v1"),
    )
    assert proxied.url == "wss://proxy.test/openai/v1/realtime?model=gpt-realtime"
    local = realtime_target(f"openai-realtime:{LOCAL}/#my model", settings(openai_api_key="k"))
    assert local == RealtimeTarget(f"{LOCAL}/realtime?model=my%20model", "my model", None)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        realtime_target("openai-realtime:gpt-realtime", settings())
    with pytest.raises(ConfigurationError, match="needs a model"):
        realtime_target(f"openai-realtime:{LOCAL}#", settings())


def test_the_realtime_key_goes_only_to_its_own_server() -> None:
    configured = settings(
        openai_api_key="sk-openai",
        openai_realtime_api_key="sk-rt",
        openai_realtime_base_url=LOCAL,
    )
    assert realtime_target(f"openai-realtime:{LOCAL}#m", configured).api_key == "sk-rt"
    elsewhere = realtime_target("openai-realtime:ws://10.0.0.9:9000/v1#m", configured)
    assert elsewhere.api_key is None  # and never the OpenAI key
    assert realtime_target("openai-realtime:m", configured).url.startswith(LOCAL)


def test_the_allow_list_knows_realtime_agents() -> None:
    def problems(spec: AgentSpec, **values: Any) -> dict[str, str]:
        return {v.field: v.message for v in check_agent(spec, settings(**values))}

    hosted = AgentSpec(name="a", llm="openai-realtime:gpt-realtime", voice="marin")
    assert "llm" in problems(hosted)  # no OpenAI key on this server
    assert problems(hosted, openai_api_key="sk") == {}
    assert "voice" in problems(hosted.model_copy(update={"voice": "joe"}), openai_api_key="sk")

    local = AgentSpec(name="a", llm=f"openai-realtime:{LOCAL}#m")
    assert "not an allowed base URL" in problems(local, openai_api_key="sk")["llm"]
    assert problems(local, api_allowed_base_urls=["http://127.0.0.1:9000/v1"]) == {}
    assert problems(local, openai_realtime_base_url=LOCAL) == {}
    with_creds = AgentSpec(name="a", llm="openai-realtime:ws://u:p@127.0.0.1:9000/v1#m")
    found = problems(with_creds, api_allowed_base_urls=["http://127.0.0.1:9000"])
    assert "credentials in a URL" in found["llm"] and "u:p" not in found["llm"]


async def test_text_channels_get_a_clear_refusal_or_the_text_model_after_it() -> None:
    voice_only = create_llm("openai-realtime:gpt-realtime", settings())
    assert isinstance(voice_only, RealtimeVoiceLLM)
    with pytest.raises(Exception, match="speech-to-speech model"):
        await complete(voice_only, LLMRequest(messages=[]))

    chain = FallbackLLM([voice_only, FakeLLM([FakeReply("From the text model.")])])
    assert (await complete(chain, LLMRequest(messages=[]))).text == "From the text model."


async def test_inside_a_realtime_call_the_engine_answers_for_the_session(tmp_path: Path) -> None:
    """After an approval (or injected text) the session's `respond()` asks the Realtime
    engine for a response; no text model runs and no text is written."""
    text_model = FakeLLM([FakeReply("From the text model.")])
    session = Session(
        Agent(name="rt"),
        llm=text_model,
        settings=Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", llm="fake"),
    )
    await session.start(greet=False)
    asked: list[str] = []
    session.set_responder(lambda: asked.append("response.create"))
    assert await session.respond() is None
    assert asked == ["response.create"] and text_model.requests == []
    session.set_responder(None)
    assert (await session.respond()) is not None  # the text model is back
    await session.close()


def test_the_outbox_drops_the_oldest_audio_and_never_a_control_event() -> None:
    client = RealtimeClient(RealtimeTarget(f"{LOCAL}/realtime", "m"), queue_size=3)
    client.send(wire.response_create())
    for n in range(5):
        client.append_audio(bytes([n]) * 160)
    client.send(wire.truncate("item_1", 20))
    kinds = [event["type"] for event, _ in client._outbox]
    assert kinds == [
        "response.create",
        *["input_audio_buffer.append"] * 3,
        "conversation.item.truncate",
    ]
    assert client.dropped_audio == 2
    kept = [event["audio"] for event, audio in client._outbox if audio]
    assert kept == [wire.append_audio(bytes([n]) * 160)["audio"] for n in (2, 3, 4)]


async def test_a_refused_key_is_not_retried_and_a_lost_server_ends_the_stream() -> None:
    async with FakeRealtimeServer(api_key="right") as server:
        wrong = RealtimeTarget(f"{server.ws_url}/realtime?model=m", "m", "wrong")
        with pytest.raises(RealtimeConnectError, match="401") as refused:
            await RealtimeClient(wrong).connect()
        assert refused.value.permanent

        config = RealtimeSessionConfig(instructions="Be brief.", audio=PCMU)
        client = create_realtime(
            f"openai-realtime:{server.ws_url}#m",
            settings(openai_realtime_api_key="right", openai_realtime_base_url=server.ws_url),
            config=config,
            reconnect_attempts=2,
            first_backoff=0.01,
            keepalive=0.2,
        )
        await client.connect()
        conn = await server.connection(0)  # the refused upgrade never became one
    # The server is gone: two quick tries, then the stream says so and ends.
    seen = []
    async with asyncio.timeout(10):
        async for event in client.events():
            seen.append(event.type)
    assert seen[0] == "session.created"
    assert seen[-2:] == [wire.CONNECTION_LOST, wire.FAILED]
    update = conn.of("session.update")[0]["session"]
    assert update["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert update["instructions"] == "Be brief."
    await client.close()
