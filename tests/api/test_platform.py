"""Agents over HTTP in use: updates, text sessions, text into live calls, phone listeners,
reclaiming idle listeners, feed authentication, the models list and the keys CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.api.conftest import KEY, EnvFactory
from tests.server.twilio_emulator import eventually
from voxline.cli import app as cli
from voxline.store.sql import SqlStore


async def test_an_update_takes_effect_from_the_next_session(make_env: EnvFactory) -> None:
    async with make_env(["First.", "Second."]) as env:
        agent = await env.create_agent({"name": "helper", "instructions": "Be brief."})
        session = await env.call("POST", "/api/sessions", json={"agent_id": agent["id"]})
        assert session.status_code == 201
        sid = session.json()["id"]
        await env.call("POST", f"/api/sessions/{sid}/messages", json={"text": "hi"})
        updated = await env.call(
            "PUT", f"/api/agents/{agent['id']}", json={"name": "helper", "instructions": "Be warm."}
        )
        assert updated.json()["version"] == 2
        await env.call("POST", f"/api/sessions/{sid}/messages", json={"text": "again"})
        systems = [r.messages[0].content for r in env.llm.requests]
        assert systems == ["Be brief.", "Be warm."]


async def test_text_sessions_answer_in_json_and_in_a_stream(make_env: EnvFactory) -> None:
    async with make_env(["Hello there.", "Streaming now."]) as env:
        agent = await env.create_agent({"name": "bot", "greeting": "Welcome!"})
        created = (
            await env.call(
                "POST", "/api/sessions", json={"agent_id": agent["id"], "subject": "u:1"}
            )
        ).json()
        assert created["greeting"] == "Welcome!" and created["resumed"] is False
        sid = created["id"]
        reply = await env.call("POST", f"/api/sessions/{sid}/messages", json={"text": "hi"})
        body = reply.json()
        assert body["reply"] == "Hello there."
        assert [t["kind"] for t in body["turns"]] == ["user_text", "bot_text"]

        async with (
            env.client() as client,
            client.stream(
                "POST", f"/api/sessions/{sid}/messages?stream=true", json={"text": "more"}
            ) as streamed,
        ):
            assert streamed.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) async for line in streamed.aiter_lines() if line]
        deltas = "".join(e["delta"] for e in lines if e["type"] == "bot_text")
        assert deltas == "Streaming now."
        assert lines[-1]["type"] == "reply" and lines[-1]["reply"] == "Streaming now."

        again = await env.call(
            "POST", "/api/sessions", json={"agent_id": agent["id"], "subject": "u:1"}
        )
        assert again.json()["id"] == sid and again.json()["resumed"] is True
        detail = (await env.call("GET", f"/api/calls/{sid}")).json()
        assert [t["data"].get("content") for t in detail["turns"]] == [
            "Welcome!",
            "hi",
            "Hello there.",
            "more",
            "Streaming now.",
        ]


async def test_text_injected_into_a_live_call_is_answered_on_the_call(
    make_env: EnvFactory,
) -> None:
    async with make_env(["Your taxi is here.", "Noted."]) as env:
        agent = await env.create_agent({"name": "dispatch"})
        listener = await env.listen(agent["id"], websocket="/ws/dispatch")
        async with env.feed(listener["feed_url"]) as feed:
            async with env.listener_call(listener["websocket_url"]) as call:
                started = await feed.until("call_started")
                injected = await env.call(
                    "POST",
                    f"/api/calls/{started['call_id']}/messages",
                    json={"text": "Tell the caller the taxi arrived.", "role": "system"},
                )
                assert injected.status_code == 202
                assert await call.reply() == "Your taxi is here."
                as_user = await env.call(
                    "POST", f"/api/calls/{started['call_id']}/messages", json={"text": "ok"}
                )
                assert as_user.status_code == 202
                assert await call.reply() == "Noted."
            await feed.until("call_ended")
        await env.hub.drain(5)
        gone = await env.call(
            "POST", f"/api/calls/{started['call_id']}/messages", json={"text": "hello?"}
        )
        assert gone.status_code == 409 and "not live" in gone.json()["error"]
        assert (env.llm.requests[0].messages[-1].content or "").endswith("the taxi arrived.")


async def test_phone_listeners_route_calls_and_texts_by_number(make_env: EnvFactory) -> None:
    async with make_env(["Got your text.", "Hi again!"]) as env:
        agent = await env.create_agent({"name": "sales", "greeting": "Sales here."})
        listener = await env.listen(agent["id"], number="+18005550101")
        assert listener["voice_url"] == "https://voice.example.test/twilio/voice"
        wildcard = await env.create_agent({"name": "catch-all"})
        await env.listen(wildcard["id"], number="*")

        assert await env.twilio.text("do you sell boats?") == ["Got your text."]
        twiml = await env.twilio.call()  # to +18005550101: the exact number beats "*"
        params = {p.attrib["name"]: p.attrib["value"] for p in twiml.iter("Parameter")}
        assert params["voxlineAgent"] == "sales"
        assert params["voxlineListener"] == listener["id"]
        assert params["voxlineGreeting"] == "contextual"  # the SMS is remembered
        async with env.feed(listener["feed_url"]) as feed:
            async with env.twilio.relay(twiml) as call:
                assert await call.reply() == "Hi again!"
            await feed.until("call_ended")
        await env.hub.drain(5)
        [conversation] = await env.store.list_conversations(subject="phone:+14155550100")
        assert conversation.agent == "sales"
        contents = [t["data"].get("content") for t in await env.store.load_turns(conversation.id)]
        assert contents[:2] == ["do you sell boats?", "Got your text."]
        assert contents[-1] == "Hi again!"


async def test_idle_listeners_are_reclaimed_unless_a_feed_is_connected(
    make_env: EnvFactory,
) -> None:
    async with make_env(listener_sweep_interval=0.05) as env:
        agent = await env.create_agent({"name": "temp"})
        watched = await env.listen(agent["id"], websocket="/ws/watched", idle_timeout=0.3)
        await env.listen(agent["id"], websocket="/ws/forgotten", idle_timeout=0.3)
        permanent = await env.listen(agent["id"], number="+18005550123", idle_timeout=0)

        async def listening(*expected: str) -> bool:
            return {li.id for li in await env.store.list_listeners()} == set(expected)

        async with env.feed(watched["feed_url"]) as feed:
            await eventually(lambda: listening(watched["id"], permanent["id"]))
            await asyncio.sleep(0.6)  # twice the idle timeout, with the feed connected
            assert await listening(watched["id"], permanent["id"])
        await eventually(lambda: listening(permanent["id"]))
        assert feed.events == []

        listener = await env.listen(agent["id"], websocket="/ws/deleted")
        async with env.feed(listener["feed_url"]) as feed:
            deleted = await env.call("DELETE", f"/api/agents/{agent['id']}/listen/{listener['id']}")
            assert deleted.status_code == 204
            event = await feed.until("listener_deleted")
            assert event["reason"] == "deleted"
            with pytest.raises(ConnectionClosed):
                await feed.next()


async def test_feed_sockets_need_a_key_in_a_header_or_a_first_message(
    make_env: EnvFactory,
) -> None:
    async with make_env() as env:
        agent = await env.create_agent({"name": "guarded"})
        listener = await env.listen(agent["id"], websocket="/ws/guarded")
        url = env.local(listener["feed_url"])
        with pytest.raises(InvalidStatus):
            async with connect(url, additional_headers={"Authorization": "Bearer nope"}):
                pass
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": "nope"}))
            assert json.loads(await ws.recv())["type"] == "error"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": KEY}))
            assert json.loads(await ws.recv())["type"] == "feed_ready"
        with pytest.raises(InvalidStatus):  # a call neither signed by Twilio nor with a key
            async with connect(env.local(listener["websocket_url"])):
                pass
        keyed = {"Authorization": f"Bearer {KEY}"}  # a bot may call a listener with a key
        async with connect(env.local(listener["websocket_url"]), additional_headers=keyed):
            pass
        missing = env.local(listener["feed_url"]).replace(listener["id"], "listener_nope")
        async with connect(missing, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            assert "no listener" in json.loads(await ws.recv())["message"]


async def test_models_lists_what_is_usable_here(make_env: EnvFactory) -> None:
    async with make_env(openai_api_key="sk-test") as env:
        models = (await env.call("GET", "/api/models")).json()
        providers = {p["provider"]: p for p in models["providers"]}
        assert models["default"] == "fake"
        assert providers["openai"]["available"] is True
        assert "anthropic" not in providers  # no key configured
        assert "sk-test" not in json.dumps(models)


def test_keys_create_prints_the_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    result = CliRunner().invoke(cli, ["keys", "create", "deploy-bot", "--db", url])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("vxk_")

    async def stored() -> list[str]:
        store = SqlStore(url)
        await store.open()
        try:
            return [k.key_hash for k in await store.list_api_keys()]
        finally:
            await store.close()

    assert asyncio.run(stored()) == [hashlib.sha256(token.encode()).hexdigest()]
    listed = CliRunner().invoke(cli, ["keys", "list", "--db", url])
    assert "deploy-bot" in listed.stdout and token not in listed.stdout
