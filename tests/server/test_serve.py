"""The server around the channels: health, status, graceful shutdown, config and retention."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest
import structlog
from typer.testing import CliRunner

from tests.server.conftest import API_KEY, EnvFactory
from tests.server.twilio_emulator import ACCOUNT, TOKEN, eventually, voice_params
from voxline import Agent
from voxline.cli import app as cli
from voxline.providers.llm.base import ConfigurationError
from voxline.providers.llm.fake import FakeReply
from voxline.server import ServerConfig, load_agents
from voxline.settings import Settings
from voxline.store.base import ConversationRecord
from voxline.store.sql import SqlStore


async def test_health_and_status_tell_no_secrets(make_env: EnvFactory) -> None:
    async with make_env() as env, httpx.AsyncClient(base_url=env.twilio.base) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        anonymous = (await client.get("/status")).json()  # a liveness probe: counters only
        assert anonymous["draining"] is False and "agents" not in anonymous
        headers = {"Authorization": f"Bearer {API_KEY}"}
        response = await client.get("/status", headers=headers)
        status = response.json()
        [agent] = status["agents"]
        assert agent["name"] == "shop" and agent["default"] is True
        assert agent["tools"] == ["lookup_order", "refund"]
        assert status["channels"]["signature_checks"] is True
        assert status["providers"] == {"default_llm": "fake"}
        assert status["version"]
        for secret in (TOKEN, API_KEY, ACCOUNT):
            assert secret not in response.text


async def test_shutdown_waits_for_a_call_in_progress(make_env: EnvFactory) -> None:
    async with make_env(["Still with you."]) as env:
        async with env.twilio.relay(await env.twilio.call()) as twilio:
            await eventually(lambda: env.hub.stats().active_calls == 1)
            env.server.handle_exit(signal.SIGTERM, None)
            await eventually(lambda: env.hub.draining)
            async with httpx.AsyncClient(base_url=env.twilio.base) as client:
                assert (await client.get("/health")).status_code == 503
            refused = await env.twilio.post("/twilio/voice", voice_params("+14155550111"))
            assert refused.status_code == 503  # Twilio falls back to the fallback URL
            await asyncio.sleep(0.3)
            assert not env.server.should_exit  # the caller is still talking
            await twilio.prompt("are you still there?")
            assert await twilio.reply() == "Still with you."
        await eventually(lambda: env.server.should_exit)


async def test_shutdown_stops_waiting_after_the_grace_period(make_env: EnvFactory) -> None:
    async with make_env(shutdown_grace_period=0.2) as env:
        twiml = await env.twilio.call()
        async with env.twilio.relay(twiml):
            await eventually(lambda: env.hub.stats().active_calls == 1)
            with structlog.testing.capture_logs() as logs:
                env.server.handle_exit(signal.SIGTERM, None)
                # The call never hangs up; the server gives up on it once the grace is over.
                await eventually(
                    lambda: any(
                        e["event"] == "grace period over; calls still in progress" for e in logs
                    )
                )
            [gave_up] = [e for e in logs if e["event"].startswith("grace period over")]
            assert gave_up["calls"] == 1  # it stopped waiting while the call was still on


def test_agents_load_from_files_and_directories_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "b.json").write_text(json.dumps({"name": "beta"}))
    (folder / "a.json").write_text(json.dumps({"name": "alpha"}))
    single = tmp_path / "gamma.json"
    single.write_text(json.dumps({"name": "gamma"}))
    assert [a.name for a in load_agents([folder, single])] == ["alpha", "beta", "gamma"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="no agent JSON files"):
        load_agents([tmp_path / "empty"])


def test_config_errors_fail_before_anything_listens(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm="fake")
    agents = [Agent(name="alpha")]
    with pytest.raises(ConfigurationError, match="two agents"):
        ServerConfig(agents=[*agents, Agent(name="alpha")], settings=settings).hosted()
    with pytest.raises(ConfigurationError, match="not hosted"):
        ServerConfig(agents=agents, settings=settings, default_agent="zeta").hosted()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "twilio": {"transport": "fax"}}))
    with pytest.raises(ConfigurationError, match=r"twilio\.transport"):
        load_agents([bad])


async def test_a_named_agent_answers_on_its_own_path(make_env: EnvFactory, tmp_path: Path) -> None:
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()
    (agents_dir / "sales.json").write_text(
        json.dumps(
            {
                "name": "sales",
                "greeting": "Sales here.",
                "twilio": {
                    "voice": "en-US-Journey-O",
                    "tts_provider": "Google",
                    "hints": ["voxline", "A17"],
                },
            }
        )
    )
    from tests.server.conftest import shop_agent

    agents = [shop_agent(), *load_agents([agents_dir])]
    async with make_env([FakeReply(text="Sales, how can I help?")], agents=agents) as env:
        twiml = await env.twilio.call(agent="sales")
        relay = twiml.find("./Connect/ConversationRelay")
        assert relay is not None
        assert relay.attrib["voice"] == "en-US-Journey-O"
        assert relay.attrib["hints"] == "voxline,A17"
        assert relay.attrib["welcomeGreeting"] == "Sales here."
        missing = await env.twilio.post("/twilio/voice/nobody", voice_params("+14155550100"))
        assert missing.status_code == 404
        assert await env.twilio.text("hi", agent="sales") == ["Sales, how can I help?"]
        await env.idle()
        [record] = await env.store.list_conversations(subject="phone:+14155550100")
        assert record.agent == "sales"


async def test_cleanup_deletes_only_old_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI points logging at its own stderr, which CliRunner closes afterwards.
    monkeypatch.setattr("voxline.cli.configure_logging", lambda *a, **k: None)
    url = f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}"
    store = SqlStore(url)
    await store.open()
    old = time.time() - 10 * 86400
    await store.upsert_conversation(ConversationRecord(id="old", created_at=old, updated_at=old))
    await store.upsert_conversation(ConversationRecord(id="new"))
    await store.close()
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["cleanup", "--older-than", "7d", "--db", url]
    )
    assert result.exit_code == 0, result.output
    assert "deleted 1 conversation" in result.output
    store = SqlStore(url)
    await store.open()
    assert [c.id for c in await store.list_conversations()] == ["new"]
    await store.close()
    bad = await asyncio.to_thread(CliRunner().invoke, cli, ["cleanup", "--older-than", "soon"])
    assert bad.exit_code == 2
