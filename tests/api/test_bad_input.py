"""Bad requests get clear 4xx answers, and a refused request leaves nothing behind."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.api.conftest import BOOKING, ApiEnv, EnvFactory


async def snapshot(env: ApiEnv) -> tuple[Any, ...]:
    agents = await env.store.list_agents()
    listeners = await env.store.list_listeners()
    return (
        [(a.id, a.name, a.version, a.spec) for a in agents],
        [(li.id, li.address) for li in listeners],
        [k.id for k in await env.store.list_api_keys()],
    )


async def test_invalid_agents_are_refused_naming_the_field(make_env: EnvFactory) -> None:
    async with make_env() as env:
        before = await snapshot(env)
        cases = [
            ({"name": "has spaces"}, "name"),
            ({"name": "hot", "temperature": 5}, "temperature"),
            ({"name": "x", "surprise": 1}, "surprise"),
            ({"instructions": "no name"}, "name"),
            ({"name": "x", "tools": ["no_such_tool"]}, "tools.0"),
            ({"name": "x", "tools": [{"name": "pick", "kind": "client"}]}, "tools.0.description"),
            (
                {
                    "name": "x",
                    "tools": [
                        {
                            "name": "pick",
                            "kind": "client",
                            "description": "d",
                            "parameters": {"type": "array"},
                        }
                    ],
                },
                "tools.0.parameters",
            ),
        ]
        for body, field in cases:
            response = await env.call("POST", "/api/agents", json=body)
            assert response.status_code == 422, (body, response.text)
            problem = response.json()
            assert field in [f["field"] for f in problem["fields"]], (body, problem)
            assert field in problem["error"]
        not_json = await env.call(
            "POST",
            "/api/agents",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert not_json.status_code == 422
        assert await snapshot(env) == before


async def test_unknown_ids_are_404(make_env: EnvFactory) -> None:
    async with make_env() as env:
        agent = await env.create_agent()
        for method, path, body in [
            ("GET", "/api/agents/agent_nope", None),
            ("PUT", "/api/agents/agent_nope", BOOKING),
            ("DELETE", "/api/agents/agent_nope", None),
            ("POST", "/api/agents/agent_nope/listen", {"websocket": "/ws/x"}),
            ("DELETE", f"/api/agents/{agent['id']}/listen/listener_nope", None),
            ("GET", "/api/calls/conv_nope", None),
            ("POST", "/api/calls/conv_nope/messages", {"text": "hi"}),
            ("POST", "/api/sessions", {"agent_id": "agent_nope"}),
            ("POST", "/api/sessions/conv_nope/messages", {"text": "hi"}),
            ("DELETE", "/api/keys/key_nope", None),
        ]:
            response = await env.call(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert "nope" in response.json()["error"]


async def test_a_wrong_key_is_401_and_changes_nothing(make_env: EnvFactory) -> None:
    async with make_env() as env:
        before = await snapshot(env)
        for key in (None, "guess", "Bearer"):
            async with env.client(key) as client:
                response = await client.post("/api/agents", json=BOOKING)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        async with env.client(None) as client:
            basic = await client.get("/api/agents", headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401
        assert await snapshot(env) == before


async def test_an_oversized_body_is_413_and_changes_nothing(make_env: EnvFactory) -> None:
    async with make_env(api_max_body_bytes=2000) as env:
        before = await snapshot(env)
        big = {**BOOKING, "instructions": "x" * 5000}
        response = await env.call("POST", "/api/agents", json=big)
        assert response.status_code == 413
        assert "2000 bytes" in response.json()["error"]

        async def chunks() -> Any:  # no Content-Length: the limit holds while streaming too
            for _ in range(10):
                yield b" " * 500

        streamed = await env.call(
            "POST", "/api/agents", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert await snapshot(env) == before


async def test_conflicts_are_409_and_keep_the_first(make_env: EnvFactory) -> None:
    async with make_env() as env:
        first = await env.create_agent()
        listener = await env.listen(first["id"], websocket="/ws/booking")
        before = await snapshot(env)
        again = await env.call("POST", "/api/agents", json=BOOKING)
        assert again.status_code == 409 and "booking" in again.json()["error"]
        hosted = await env.call("POST", "/api/agents", json={"name": "front-desk"})
        assert hosted.status_code == 409
        second = await env.create_agent({"name": "other"})
        taken = await env.call(
            "POST", f"/api/agents/{second['id']}/listen", json={"websocket": "/ws/booking"}
        )
        assert taken.status_code == 409
        renamed = await env.call("PUT", f"/api/agents/{second['id']}", json=BOOKING)
        assert renamed.status_code == 409
        for body in (
            {},
            {"number": "+1", "websocket": "/ws/x"},
            {"number": "555"},
            {"websocket": "/twilio/relay"},
            {"websocket": "/ws/../api"},
        ):
            bad = await env.call("POST", f"/api/agents/{second['id']}/listen", json=body)
            assert bad.status_code == 422, body
        after = await snapshot(env)
        assert after[1] == before[1] and listener["id"] in [li[0] for li in after[1]]
        assert [a for a in after[0] if a[0] == first["id"]] == [
            a for a in before[0] if a[0] == first["id"]
        ]


async def test_rate_limit_answers_429_with_retry_after(make_env: EnvFactory) -> None:
    async with make_env(api_rate_limit=0.5, api_rate_burst=3) as env:
        async with env.client() as client:
            statuses = [(await client.get("/api/agents")).status_code for _ in range(3)]
            limited = await client.get("/api/agents")
        assert statuses == [200, 200, 200]
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        async with env.client("guess") as stranger:  # unknown keys are refused, not counted
            assert (await stranger.get("/api/agents")).status_code == 401


async def test_keys_are_hashed_shown_once_and_revocable(make_env: EnvFactory) -> None:
    async with make_env() as env:
        created = await env.call("POST", "/api/keys", json={"name": "ci"})
        assert created.status_code == 201
        token = created.json()["token"]
        [record] = await env.store.list_api_keys()
        assert record.key_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in str(record.model_dump())[len(record.prefix) :]
        listed = (await env.call("GET", "/api/keys")).json()["keys"]
        assert "token" not in listed[0]
        async with env.client(token) as client:
            assert (await client.get("/api/models")).status_code == 200
        revoked = await env.call("DELETE", f"/api/keys/{record.id}")
        assert revoked.status_code == 204
        async with env.client(token) as client:
            assert (await client.get("/api/models")).status_code == 401
