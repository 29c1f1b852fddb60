"""The browser channel's door: session tokens, open mode on loopback, agents open to the web,
per-client limits, and the throttle on failed credentials shared by every endpoint.

Test clients connect from 127.0.0.1; one that sends `X-Forwarded-For` is a remote client (the
peer is a loopback proxy and `trust_forwarded_headers` is on by default), so open mode does not
apply to it and its limits are its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from websockets.typing import Subprotocol

from tests.server.conftest import API_KEY, EnvFactory
from voxline import Agent
from voxline.agents.spec import AgentSpec
from voxline.server.auth_throttle import (
    MAX_CLIENTS,
    AuthThrottle,
    client_address,
    is_local_client,
)
from voxline.server.web_routes import NEEDS_CREDENTIAL
from voxline.server.web_tokens import WebTokens
from voxline.settings import Settings
from voxline.voice.providers import SpeechProviders

from .browser import BrowserCall, browser_call, fake_speech

REMOTE = {"X-Forwarded-For": "203.0.113.7"}
OTHER_REMOTE = {"X-Forwarded-For": "203.0.113.8"}
GREETING = "Hello from the browser."


def helper() -> Agent:
    return Agent(name="helper", instructions="You help in the browser.", greeting=GREETING)


def private() -> Agent:
    return Agent(name="private", instructions="Staff only.", web=False)


@pytest.fixture(autouse=True)
def speech(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    async def load(spec: AgentSpec, *, vad: str = "local", **_: object) -> SpeechProviders:
        return fake_speech()

    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", load)
    yield


def offering(credential: str) -> dict[str, Any]:
    """Connection options of a browser offering `credential` as the page does."""
    return {"subprotocols": [Subprotocol("voxline"), Subprotocol("voxline.token." + credential)]}


async def refusal(base: str, query: dict[str, str] | None = None, **options: Any) -> Any:
    """The `error` message, close code and close reason of a call the server refuses."""
    async with browser_call(base, query, **options) as call:
        error = await call.event("error")
        await call.wait_for(lambda: call.ws.close_code is not None)
    assert call.of("hello") == []
    return error["message"], call.ws.close_code, call.ws.close_reason


async def api(
    base: str, method: str, path: str, *, key: str | None = API_KEY, **kwargs: Any
) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with httpx.AsyncClient(base_url=base) as client:
        return await client.request(method, path, headers=headers, **kwargs)


async def token_for(base: str, **body: Any) -> dict[str, Any]:
    response = await api(base, "POST", "/api/web/tokens", json=body)
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


async def hello_of(call: BrowserCall) -> dict[str, Any]:
    hello: dict[str, Any] = await call.event("hello")
    return hello


# -- who may call --------------------------------------------------------------------------
async def test_without_a_credential_only_a_local_client_in_open_mode_may_call(
    make_env: EnvFactory,
) -> None:
    async with make_env(agents=[helper()]) as env:
        base = env.twilio.base
        async with browser_call(base) as local:
            assert (await hello_of(local))["agent"] == "helper"
        message, code, reason = await refusal(base, additional_headers=REMOTE)
        assert message == NEEDS_CREDENTIAL and code == 1008 and reason.startswith("this server")
    async with make_env(agents=[helper()], web_open_localhost=False) as env:
        message, code, _ = await refusal(env.twilio.base)
        assert message == NEEDS_CREDENTIAL and code == 1008


async def test_a_session_token_opens_its_agent_and_then_only_its_conversation(
    make_env: EnvFactory,
) -> None:
    async with make_env(agents=[helper(), Agent(name="shop", instructions="Shop.")]) as env:
        base = env.twilio.base
        issued = await token_for(base, agent="helper", ttl=60)
        assert issued["url"].startswith("https://voice.example.test/?agent=helper#token=w1.")
        assert issued["websocket_url"] == "wss://voice.example.test/web/call?agent=helper"
        token = issued["token"]
        async with browser_call(base, additional_headers=REMOTE, **offering(token)) as call:
            hello = await hello_of(call)
            bound = await call.event("token")
            assert call.ws.subprotocol == "voxline"  # the token itself is never echoed
        conversation = hello["conversation_id"]
        assert hello["agent"] == "helper" and bound["conversation_id"] == conversation
        assert call.events[0]["type"] == "hello"

        await env.idle()
        again = {"conversation": conversation}
        opts = {"additional_headers": REMOTE, **offering(bound["token"])}
        async with browser_call(base, again, **opts) as resumed:
            assert (await hello_of(resumed))["resumed"]
        assert resumed.of("token") == []  # already bound

        for query, options, expected in [
            ({"agent": "shop"}, offering(token), "this session token is for agent 'helper'"),
            ({"conversation": conversation}, offering(token), "can only start a new"),
            ({"conversation": "conv_other"}, offering(bound["token"]), "another conversation"),
            ({"agent": "shop"}, offering(bound["token"]), "for agent 'helper'"),
        ]:
            message, code, _ = await refusal(base, query, additional_headers=REMOTE, **options)
            assert expected in message and code == 1008


async def test_a_token_for_a_conversation_and_the_api_checks(make_env: EnvFactory) -> None:
    async with make_env(agents=[helper(), private()]) as env:
        base = env.twilio.base
        async with browser_call(base) as first:
            conversation = (await hello_of(first))["conversation_id"]
        await env.idle()
        issued = await token_for(base, agent="helper", conversation=conversation)
        assert issued["conversation"] == conversation
        assert f"conversation={conversation}#token=" in issued["url"]
        async with browser_call(base, additional_headers=REMOTE, **offering(issued["token"])) as c:
            hello = await hello_of(c)
        assert hello["conversation_id"] == conversation and hello["resumed"]

        for body, status in [
            ({"agent": "nobody"}, 404),
            ({"agent": "private"}, 409),
            ({"agent": "helper", "conversation": "conv_nope"}, 404),
            ({"agent": "helper", "agent_id": "agent_x"}, 422),
            ({}, 422),
            ({"agent": "helper", "ttl": 0}, 422),
        ]:
            response = await api(base, "POST", "/api/web/tokens", json=body)
            assert response.status_code == status, (body, response.text)
        unauthorized = await api(base, "POST", "/api/web/tokens", key=None, json={"agent": "x"})
        assert unauthorized.status_code == 401


async def test_expired_forged_and_tampered_tokens_are_refused(make_env: EnvFactory) -> None:
    async with make_env(agents=[helper(), Agent(name="shop", instructions="Shop.")]) as env:
        base = env.twilio.base
        short = (await token_for(base, agent="helper", ttl=0.05))["token"]
        await asyncio.sleep(0.2)
        valid = (await token_for(base, agent="helper"))["token"]
        version, _, signature = valid.split(".")
        other_claims = (await token_for(base, agent="shop"))["token"].split(".")[1]
        foreign, _ = WebTokens(b"somebody else's key", 60).mint("helper")
        for token, expected in [
            (short, "expired session token"),
            (foreign, "forged session token"),
            (f"{version}.{other_claims}.{signature}", "forged session token"),
            ("w1.garbage", "malformed session token"),
        ]:
            message, code, _ = await refusal(base, additional_headers=REMOTE, **offering(token))
            assert expected in message and code == 1008


async def test_an_api_key_may_call_and_a_wrong_one_may_not(make_env: EnvFactory) -> None:
    async with make_env(agents=[helper()]) as env:
        base = env.twilio.base
        bearer = {"X-Forwarded-For": "203.0.113.7", "Authorization": f"Bearer {API_KEY}"}
        async with browser_call(base, additional_headers=bearer) as call:
            await hello_of(call)
        async with browser_call(base, additional_headers=REMOTE, **offering(API_KEY)) as call:
            await hello_of(call)
        assert call.of("token") == []  # a key holder needs no bound token
        # An explicit credential is checked even where open mode would let the client in.
        message, code, _ = await refusal(base, **offering("not-the-key"))
        assert message == "the API key is not valid" and code == 1008


# -- agents open to the web ----------------------------------------------------------------
async def test_only_agents_open_to_the_web_can_be_called_or_shown(make_env: EnvFactory) -> None:
    async with make_env(agents=[helper(), private()]) as env:
        base = env.twilio.base
        message, code, _ = await refusal(base, {"agent": "private"})
        assert message == "no agent named 'private' is open to the browser" and code == 1008
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/?agent=private")).status_code == 404
            assert (await client.get("/?agent=helper")).status_code == 200

        spec = {"name": "remote", "instructions": "Defined over the API.", "greeting": "Hi."}
        created = await api(base, "POST", "/api/agents", json=spec)
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        message, _, _ = await refusal(base, {"agent": "remote"})
        assert "is open to the browser" in message  # API agents are off unless they say so
        response = await api(base, "POST", "/api/web/tokens", json={"agent_id": agent_id})
        assert response.status_code == 409 and '"web": true' in response.json()["error"]

        updated = await api(base, "PUT", f"/api/agents/{agent_id}", json={**spec, "web": True})
        assert updated.status_code == 200 and updated.json()["spec"]["web"] is True
        token = (await token_for(base, agent_id=agent_id))["token"]
        async with browser_call(base, additional_headers=REMOTE, **offering(token)) as call:
            assert (await hello_of(call))["agent"] == "remote"


# -- per-client limits ---------------------------------------------------------------------
async def test_calls_at_once_are_limited_per_client_address(make_env: EnvFactory) -> None:
    async with make_env(agents=[helper()], web_max_calls_per_client=2) as env:
        base = env.twilio.base
        token = (await token_for(base, agent="helper"))["token"]
        opts = {"additional_headers": REMOTE, **offering(token)}
        async with browser_call(base, **opts) as one, browser_call(base, **opts) as two:
            await hello_of(one)
            await hello_of(two)
            message, code, _ = await refusal(base, **opts)
            assert "already has 2 browser calls open" in message and code == 1013
            other = {"additional_headers": OTHER_REMOTE, **offering(token)}
            async with browser_call(base, **other) as elsewhere:
                await hello_of(elsewhere)
        await env.idle()
        async with browser_call(base, **opts) as later:  # the slots were given back
            await hello_of(later)


async def test_new_calls_are_rate_limited_per_client_address(make_env: EnvFactory) -> None:
    async with make_env(agents=[helper()], web_call_rate_burst=2, web_call_rate_limit=0.001) as env:
        base = env.twilio.base
        token = (await token_for(base, agent="helper"))["token"]
        opts = {"additional_headers": REMOTE, **offering(token)}
        for _ in range(2):
            async with browser_call(base, **opts) as call:
                await hello_of(call)
        message, code, reason = await refusal(base, **opts)
        assert "too many new calls from this address" in message and code == 1013
        assert reason.startswith("too many new calls")
        other = {"additional_headers": OTHER_REMOTE, **offering(token)}
        async with browser_call(base, **other) as call:
            await hello_of(call)


# -- failed authentication is throttled on every door --------------------------------------
async def test_repeated_wrong_keys_are_throttled_on_the_api_and_approvals(
    make_env: EnvFactory,
) -> None:
    async with make_env(auth_max_failures=3, auth_cooldown=1.0) as env:
        base = env.twilio.base
        statuses = [
            (await api(base, "GET", "/api/agents", key=f"guess-{n}")).status_code for n in range(3)
        ]
        assert statuses == [401, 401, 401]
        throttled = await api(base, "GET", "/api/agents")  # even the right key: not looked at
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
        assert "too many failed authentication attempts" in throttled.json()["error"]
        approvals = await api(base, "GET", "/approvals")
        assert approvals.status_code == 429 and approvals.headers["Retry-After"] == "1"
        elsewhere = await api(base, "GET", "/api/agents", headers=REMOTE)
        assert elsewhere.status_code == 200  # another address is not affected
        no_key = await api(base, "GET", "/api/agents", key=None, headers=OTHER_REMOTE)
        assert no_key.status_code == 401  # a missing key is refused, not counted

        await asyncio.sleep(1.1)
        assert (await api(base, "GET", "/api/agents")).status_code == 200
        assert (await api(base, "GET", "/approvals")).status_code == 200

        for n in range(3):  # wrong keys on /approvals count too
            assert (await api(base, "GET", "/approvals", key=f"x{n}")).status_code == 401
        assert (await api(base, "GET", "/api/agents")).status_code == 429


async def test_repeated_bad_tokens_are_throttled_on_the_call_socket(make_env: EnvFactory) -> None:
    async with make_env(agents=[helper()], auth_max_failures=2, auth_cooldown=30.0) as env:
        base = env.twilio.base
        token = (await token_for(base, agent="helper"))["token"]
        forged, _ = WebTokens(b"guessed key", 60).mint("helper")
        for _ in range(2):
            message, _, _ = await refusal(base, additional_headers=REMOTE, **offering(forged))
            assert "forged" in message
        message, code, _ = await refusal(base, additional_headers=REMOTE, **offering(token))
        assert message.startswith("too many failed attempts") and code == 1013
        api_call = await api(base, "GET", "/api/agents", headers=REMOTE)
        assert api_call.status_code == 429  # one throttle for every door
        async with browser_call(base, additional_headers=OTHER_REMOTE, **offering(token)) as c:
            await hello_of(c)


# -- the pieces ----------------------------------------------------------------------------
def _conn(peer: str, **headers: str) -> Request:
    raw = [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw, "client": (peer, 5000)})


def test_who_the_client_is() -> None:
    trusting = Settings(trust_forwarded_headers=True)
    assert client_address(_conn("10.0.0.2", x_forwarded_for="1.1.1.1, 9.9.9.9"), trusting) == (
        "9.9.9.9"  # the entry the proxy appended, not what the client claimed
    )
    assert client_address(_conn("8.8.4.4", x_forwarded_for="9.9.9.9"), trusting) == "8.8.4.4"
    no_trust = Settings(trust_forwarded_headers=False)
    assert client_address(_conn("10.0.0.2", x_forwarded_for="9.9.9.9"), no_trust) == "10.0.0.2"
    assert client_address(_conn("2001:db8:1:2:3:4:5:6"), trusting) == "2001:db8:1:2::/64"
    assert client_address(_conn("2001:db8:1:2:ffff::9"), trusting) == "2001:db8:1:2::/64"

    assert is_local_client(_conn("127.0.0.1", host="127.0.0.1:8080"))
    assert is_local_client(_conn("127.0.0.1", host="localhost:8080"))
    assert is_local_client(_conn("::1", host="[::1]:8080"))
    assert not is_local_client(_conn("127.0.0.1", host="rebound.example:8080"))
    assert not is_local_client(_conn("127.0.0.1", host="127.0.0.1", x_forwarded_for="9.9.9.9"))
    assert not is_local_client(_conn("127.0.0.1", host="127.0.0.1", forwarded="for=9.9.9.9"))
    assert not is_local_client(_conn("192.168.1.5", host="127.0.0.1"))


def test_the_throttle_counts_failures_in_a_window_and_forgets() -> None:
    now = [0.0]
    throttle = AuthThrottle(3, window=10.0, cooldown=5.0, clock=lambda: now[0])
    assert throttle.failed("a") == 0 and throttle.failed("a") == 0
    now[0] = 11.0  # the first two fell out of the window
    assert throttle.failed("a") == 0 and throttle.failed("a") == 0
    assert throttle.retry_after("a") == 0
    assert throttle.failed("a") == 5.0 and throttle.retry_after("a") == 5.0
    assert throttle.retry_after("b") == 0
    now[0] = 16.0
    assert throttle.retry_after("a") == 0
    for n in range(MAX_CLIENTS + 5):
        throttle.failed(f"flood-{n}")
    assert len(throttle._clients) <= MAX_CLIENTS
