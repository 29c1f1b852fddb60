"""The operator decides what an agent defined over the API may name: no file path, no unlisted
model, voice or base URL, no tool the server does not have. Each refusal is a 422 naming the
field, nothing is stored, and a configured provider key never goes to a server it was not
configured for."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.api.conftest import EnvFactory
from tests.providers.chat_server import ChatServer, text_reply
from voxline.agents.policy import AgentPolicyError, check_agent, enforce_agent
from voxline.agents.spec import AgentSpec
from voxline.providers.llm.base import ChatMessage, LLMRequest, complete
from voxline.providers.llm.registry import base_url_within, create_llm
from voxline.settings import Settings
from voxline.store.base import AgentRecord

ALLOWED_URL = "http://127.0.0.1:9/v1"  # nothing listens: the API only checks, never connects
PICK_SLOT = {"name": "pick_slot", "kind": "client", "description": "Find a free slot."}
# Explicit lists, so the tests do not depend on which local models are installed.
SPEECH = {
    "api_allowed_stt": ["whisper:tiny.en"],
    "api_allowed_tts": ["piper"],
    "api_allowed_voices": ["joe"],
    "openai_compatible_base_url": ALLOWED_URL,
}

REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"llm": "local:/x.gguf"}, "llm", "names a file"),
    ({"llm": "local:../models/x.gguf"}, "llm", "names a file"),
    ({"llm": "fake,local:/x.gguf"}, "llm", "fallback 2 of 2"),
    ({"stt": "whisper:/x"}, "stt", "names a file"),
    ({"tts": "piper:/x"}, "tts", "names a file"),
    ({"voice": "piper:/x"}, "voice", "names a file"),
    ({"voice": "../../etc/passwd"}, "voice", "names a file"),
    ({"voice": "amy"}, "voice", "not a voice here"),
    ({"stt": "deepgram"}, "stt", "not available here"),
    ({"llm": "anthropic:claude-sonnet-4-5"}, "llm", "not allowed here"),
    ({"llm": "no-such-provider:x"}, "llm", "unknown LLM provider"),
    ({"llm": "openai-compatible:http://evil.test/v1#m"}, "llm", "not an allowed base URL"),
    ({"llm": "openai-compatible:http://127.0.0.1:9/v1x#m"}, "llm", "not an allowed base URL"),
    ({"llm": "openai-compatible:https://127.0.0.1:9/v1#m"}, "llm", "not an allowed base URL"),
    ({"llm": "openai-compatible:http://127.0.0.1:9/v1/../admin#m"}, "llm", "plain http(s)"),
    ({"llm": "openai-compatible:http://u:secret@127.0.0.1:9/v1#m"}, "llm", "credentials"),
    ({"llm": "openai-compatible:http://127.0.0.1:9@evil.test/v1#m"}, "llm", "credentials"),
    ({"tools": [PICK_SLOT, "no_such_tool"]}, "tools.1", "no tool named 'no_such_tool'"),
    (
        {"tools": [PICK_SLOT], "approvals": {"tools": ["pick_slot", "refund"]}},
        "approvals.tools.1",
        "not one of this agent's tools",
    ),
    # models named besides `llm` run on the server's keys too
    ({"summarization": {"llm": "local:/tmp/x.gguf"}}, "summarization.llm", "names a file"),
    (
        {"guardrails": {"input": {"classifier": {"llm": "openai-compatible:http://evil.test#m"}}}},
        "guardrails.input.classifier.llm",
        "not an allowed base URL",
    ),
    (
        {"guardrails": {"output": {"custom": ["no_such_check"]}}},
        "guardrails.output.custom.0",
        "no guardrail check named 'no_such_check'",
    ),
]


async def test_every_field_that_cannot_run_here_is_a_422_naming_it(make_env: EnvFactory) -> None:
    async with make_env(**SPEECH) as env:
        for fields, field, why in REFUSED:
            response = await env.call("POST", "/api/agents", json={"name": "bad", **fields})
            assert response.status_code == 422, (fields, response.text)
            body = response.json()
            named = {problem["field"]: problem["message"] for problem in body["fields"]}
            assert field in named, (fields, body)
            assert why in named[field], (fields, body)
            assert "secret" not in response.text  # a password in a URL is never echoed
        assert (await env.call("GET", "/api/agents")).json()["agents"] == []


async def test_allowed_values_are_stored_and_the_agent_answers(make_env: EnvFactory) -> None:
    async with make_env(["Booked for Monday."], **SPEECH) as env:
        spec = {
            "name": "allowed",
            "llm": f"fake,openai-compatible:{ALLOWED_URL}/#qwen2.5",
            "stt": "whisper:tiny.en",
            "tts": "piper",
            "voice": "joe",
            "tools": [PICK_SLOT],
            "approvals": {"tools": ["pick_slot"]},
        }
        agent = await env.create_agent(spec)
        session = await env.call("POST", "/api/sessions", json={"agent_id": agent["id"]})
        assert session.status_code == 201, session.text
        sid = session.json()["id"]
        reply = await env.call("POST", f"/api/sessions/{sid}/messages", json={"text": "Monday?"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["reply"] == "Booked for Monday."


async def test_a_refused_update_leaves_the_stored_agent_as_it_was(make_env: EnvFactory) -> None:
    async with make_env(**SPEECH) as env:
        agent = await env.create_agent({"name": "keeper", "llm": "fake", "voice": "joe"})
        for bad in ({"voice": "/etc/passwd"}, {"llm": "openai-compatible:http://evil.test#m"}):
            response = await env.call(
                "PUT", f"/api/agents/{agent['id']}", json={"name": "keeper", **bad}
            )
            assert response.status_code == 422, response.text
            assert [p["field"] for p in response.json()["fields"]] == list(bad)
        stored = (await env.call("GET", f"/api/agents/{agent['id']}")).json()
        assert stored["version"] == 1
        assert stored["spec"]["llm"] == "fake" and stored["spec"]["voice"] == "joe"


async def test_the_models_list_is_the_allow_list(make_env: EnvFactory) -> None:
    settings = {
        **SPEECH,
        "openai_api_key": "sk-test",
        "api_allowed_base_urls": "http://user:hunter2@127.0.0.1:9/v1, http://127.0.0.1:10/v1",
    }
    async with make_env(**settings) as env:
        response = await env.call("GET", "/api/models")
        models = response.json()
        providers = {p["provider"]: p for p in models["providers"]}
        assert {"openai", "fake", "openai-compatible"} <= set(providers)
        assert "anthropic" not in providers  # no key
        assert models["stt"] == ["whisper:tiny.en"] and models["voices"] == ["joe"]
        assert models["base_urls"] == ["http://***@127.0.0.1:9/v1", "http://127.0.0.1:10/v1"]
        assert "hunter2" not in response.text and "sk-test" not in response.text
        ok = {"name": "second-server", "llm": "openai-compatible:http://127.0.0.1:10/v1/x#m"}
        assert (await env.call("POST", "/api/agents", json=ok)).status_code == 201


async def test_explicit_lists_replace_the_defaults(make_env: EnvFactory) -> None:
    async with make_env(api_allowed_llms=["openai-compatible:http://127.0.0.1:11/v1#m"]) as env:
        fake = await env.call("POST", "/api/agents", json={"name": "a", "llm": "fake"})
        assert fake.status_code == 422 and fake.json()["fields"][0]["field"] == "llm"
        listed = {"name": "b", "llm": "openai-compatible:http://127.0.0.1:11/v1#m"}
        assert (await env.call("POST", "/api/agents", json=listed)).status_code == 201
        unset = await env.call("POST", "/api/agents", json={"name": "c"})  # the server's default
        assert unset.status_code == 201


def test_list_settings_read_json_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXLINE_API_ALLOWED_VOICES", "joe, amy")
    monkeypatch.setenv("VOXLINE_API_ALLOWED_STT", '["whisper:tiny.en"]')
    settings = Settings()
    assert settings.api_allowed_voices == ["joe", "amy"]
    assert settings.api_allowed_stt == ["whisper:tiny.en"]


async def test_a_stored_agent_that_no_longer_passes_raises_a_validation_error() -> None:
    spec = AgentSpec(name="old", llm="local:/models/x.gguf", voice="joe")
    settings = Settings(llm="fake", api_allowed_voices=["joe"])
    with pytest.raises(AgentPolicyError) as raised:
        enforce_agent(spec, settings)
    assert isinstance(raised.value, ValidationError)  # what the hub already treats as unusable
    assert [e["loc"] for e in raised.value.errors()] == [("llm",)]
    enforce_agent(spec.model_copy(update={"llm": None}), settings)
    assert check_agent(spec.model_copy(update={"llm": "fake"}), settings) == []


async def test_a_stored_agent_that_no_longer_passes_is_refused_with_json(
    make_env: EnvFactory,
) -> None:
    async with make_env() as env:
        record = AgentRecord(id="agent_old", name="old", spec={"name": "old", "voice": "/x.onnx"})
        await env.store.save_agent(record)
        response = await env.call("POST", "/api/sessions", json={"agent_id": record.id})
        assert response.status_code == 409, response.text
        assert "no longer validates" in response.json()["error"]


# -- the key goes only where it was configured for -----------------------------------------

REQUEST = LLMRequest(messages=[ChatMessage(role="user", content="hi")])


async def _authorization(spec: str, settings: Settings, server: ChatServer) -> str:
    server.add(text_reply("ok"))
    llm = create_llm(spec, settings, max_retries=0)
    try:
        assert (await complete(llm, REQUEST)).text == "ok"
    finally:
        await llm.aclose()
    return server.requests[-1].headers["authorization"]


async def test_the_compatible_key_goes_only_to_its_base_url() -> None:
    async with ChatServer() as configured, ChatServer() as other:
        settings = Settings(
            openai_compatible_api_key="sk-compat-secret",
            openai_compatible_base_url=configured.base_url,
        )
        mine = await _authorization(
            f"openai-compatible:{configured.base_url}#m", settings, configured
        )
        theirs = await _authorization(f"openai-compatible:{other.base_url}#m", settings, other)
        unset = Settings(openai_compatible_api_key="sk-compat-secret")
        nowhere = await _authorization(
            f"openai-compatible:{configured.base_url}#m", unset, configured
        )
    assert mine == "Bearer sk-compat-secret"
    assert theirs == nowhere == "Bearer not-needed"


@pytest.mark.parametrize(
    ("url", "within"),
    [
        ("https://api.example.test/v1", True),
        ("https://API.example.test:443/v1/", True),
        ("https://api.example.test/v1/chat", True),
        ("https://api.example.test/v10", False),
        ("http://api.example.test/v1", False),
        ("https://api.example.test:8443/v1", False),
        ("https://api.example.test.evil.test/v1", False),
        ("https://u:p@api.example.test/v1", False),
        ("https://api.example.test/v1/../../admin", False),
        ("https://api.example.test/v1/%2e%2e/admin", False),
        ("https://api.example.test/v1?x=1", False),
        ("https://api.example.test\\@evil.test/v1", False),
    ],
)
def test_base_url_comparison(url: str, within: bool) -> None:
    assert base_url_within(url, "https://api.example.test/v1") is within


def test_hosted_speech_is_allowed_when_its_key_is_configured() -> None:
    from voxline.agents.policy import check_agent
    from voxline.agents.spec import AgentSpec

    spec = AgentSpec(name="phone", stt="deepgram:nova-3,local", tts="openai:gpt-4o-mini-tts")
    without = {v.loc[0] for v in check_agent(spec, Settings(llm="fake"))}
    assert without == {"stt", "tts"}  # no keys: not available here
    keyed = Settings(llm="fake", deepgram_api_key="dg-test", openai_api_key="sk-test")
    assert check_agent(spec.model_copy(update={"voice": "alloy"}), keyed) == []
    chained_file = spec.model_copy(update={"stt": "deepgram:nova-3,whisper:/tmp/x"})
    assert [v.loc for v in check_agent(chained_file, keyed)] == [("stt",)]


def test_the_bundled_recognizer_may_be_named_with_a_beam_but_not_beside_a_path() -> None:
    from voxline.agents.policy import check_agent
    from voxline.agents.spec import AgentSpec

    settings = Settings(llm="fake")
    for stt in ("local", "local:tiny.en", "local:tiny.en#beam=5", "whisper:tiny.en#beam=2"):
        assert check_agent(AgentSpec(name="a", stt=stt), settings) == [], stt
    for stt in ("local:/tmp/model#beam=5", "local:tiny.en#size=9", "local:small.en"):
        assert [v.loc for v in check_agent(AgentSpec(name="a", stt=stt), settings)] == [("stt",)], (
            stt
        )
