"""Every Twilio door checks `X-Twilio-Signature`: 403 and a log line, never a session."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import structlog
from websockets.exceptions import InvalidStatus

from tests.server.conftest import EnvFactory
from tests.server.twilio_emulator import PUBLIC, Twilio, sms_params, voice_params

ACTION = {"CallSid": "CA1", "SessionId": "VX1", "SessionStatus": "completed"}


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/twilio/voice", voice_params("+14155550100")),
        ("/twilio/sms", sms_params("hi", "+14155550100")),
        ("/twilio/relay/action/shop", ACTION),
    ],
)
async def test_webhooks_refuse_bad_and_missing_signatures(
    make_env: EnvFactory, path: str, params: dict[str, str]
) -> None:
    async with make_env() as env:
        wrong_url = env.twilio.sign("https://elsewhere.example.test" + path, params)
        tampered = env.twilio.sign(PUBLIC + path, params)
        forged = Twilio(env.twilio.base, token="not-the-token").sign(PUBLIC + path, params)
        with structlog.testing.capture_logs() as logs:
            for signature in (wrong_url, forged, ""):
                response = await env.twilio.post(path, params, signature=signature)
                assert response.status_code == 403
            response = await env.twilio.post(
                path, {**params, "From": "+15555550123"}, signature=tampered
            )
            assert response.status_code == 403
        rejected = [e for e in logs if e["event"] == "twilio signature rejected"]
        assert len(rejected) == 4
        assert rejected[-2]["reason"] == "missing signature"
        assert await env.store.list_conversations() == []
        assert env.llm.requests == []


async def test_the_websocket_upgrade_needs_the_wss_signature(make_env: EnvFactory) -> None:
    async with make_env() as env:
        twiml = await env.twilio.call()
        url = "wss://voice.example.test/twilio/relay"
        over_http_host = env.twilio.sign(url.replace("voice.example", "other.example"))
        for signature in (over_http_host, "", env.twilio.sign(url + "?x=1")):
            with pytest.raises(InvalidStatus) as refused:
                async with env.twilio.relay(twiml, signature=signature):
                    pass
            assert refused.value.response.status_code == 403
        await env.idle()
        assert env.hub.stats().active_calls == 0


async def test_forwarded_headers_rebuild_the_signed_url(make_env: EnvFactory) -> None:
    async with make_env(["Hello."], public_url=None) as env:
        params = sms_params("hi", "+14155550100")
        signature = env.twilio.sign("https://tunnel.example.test/twilio/sms", params)
        async with httpx.AsyncClient(base_url=env.twilio.base) as client:
            response = await client.post(
                "/twilio/sms",
                data=params,
                headers={
                    "X-Twilio-Signature": signature,
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": "tunnel.example.test",
                },
            )
        assert response.status_code == 200
        assert "<Message>Hello.</Message>" in response.text


async def test_checks_can_be_turned_off_for_local_development(make_env: EnvFactory) -> None:
    with structlog.testing.capture_logs() as logs:
        async with make_env(["Hello."], twilio_validate_signatures=False) as env:
            response = await env.twilio.post(
                "/twilio/sms", sms_params("hi", "+14155550100"), signature=""
            )
            assert response.status_code == 200
    assert any("SIGNATURE CHECKS ARE OFF" in e["event"] for e in logs)


async def test_without_an_auth_token_the_server_starts_and_refuses_twilio(
    make_env: EnvFactory,
) -> None:
    async with make_env(twilio_auth_token=None) as env:
        params = voice_params("+14155550100")
        with structlog.testing.capture_logs() as logs:
            response = await env.twilio.post(
                "/twilio/voice", params, signature=env.twilio.sign(PUBLIC + "/twilio/voice", params)
            )
        assert response.status_code == 403
        assert [e["reason"] for e in logs if e["event"] == "twilio signature rejected"] == [
            "no TWILIO_AUTH_TOKEN configured"
        ]
        async with httpx.AsyncClient(base_url=env.twilio.base) as client:
            assert (await client.get("/health")).status_code == 200


SHARED_KEY = "webhooks-shared-key-secret"
RULE = "key=webhooks_sharedkey_ab12,algorithm=HMAC_SHA256"


async def test_a_webhooks_rule_signs_with_its_shared_key_and_hmac_sha256(
    make_env: EnvFactory,
) -> None:
    from twilio.request_validator import RequestValidator

    path, params = "/twilio/sms", sms_params("hi", "+14155550100")
    official = RequestValidator(SHARED_KEY).compute_signature(
        PUBLIC + path, params, algorithm="HMAC_SHA256"
    )
    async with (
        make_env(["Hello."], twilio_webhook_shared_key=SHARED_KEY) as env,
        httpx.AsyncClient(base_url=env.twilio.base) as client,
    ):

        async def post(signature: str, settings: str | None) -> int:
            headers = {"X-Twilio-Signature": signature}
            if settings is not None:
                headers["X-Twilio-Webhooks-Signature-Settings"] = settings
            return (await client.post(path, data=params, headers=headers)).status_code

        assert await post(official, RULE) == 200
        # The rule's header says which key: the token's SHA-1 signature no longer counts,
        # an unsupported algorithm is refused, and without the header SHA-1 still works.
        assert await post(env.twilio.sign(PUBLIC + path, params), RULE) == 403
        assert await post(official, "key=x,algorithm=HMAC_MD5") == 403
        assert await post(env.twilio.sign(PUBLIC + path, params), None) == 200
    async with make_env(["Hello."]) as env:  # no shared key configured: refused, loudly
        with structlog.testing.capture_logs() as logs:
            # without the header the SHA-256 signature is checked as SHA-1 with the token
            response = await env.twilio.post(path, params, signature=official)
            assert response.status_code == 403
            async with httpx.AsyncClient(base_url=env.twilio.base) as client:
                response = await client.post(
                    path,
                    data=params,
                    headers={
                        "X-Twilio-Signature": official,
                        "X-Twilio-Webhooks-Signature-Settings": RULE,
                    },
                )
            assert response.status_code == 403
        reasons = [e["reason"] for e in logs if e["event"] == "twilio signature rejected"]
        assert reasons[-1] == "signed with a shared key, but none is configured"


async def _refused(env_twilio: Twilio, twiml: object, **setup: object) -> None:
    """The socket accepts the upgrade (its signature is fine) but closes on `setup` with 1008
    and no session: the call token does not admit this call."""
    async with env_twilio.relay(twiml, **setup) as twilio:  # type: ignore[arg-type]
        await twilio.ws.wait_closed()
        assert twilio.ws.close_code == 1008


async def test_a_replayed_socket_signature_cannot_open_anyone_elses_call(
    make_env: EnvFactory,
) -> None:
    """One leaked upgrade signature used to let anyone open sessions as any caller."""
    async with make_env(["Hello, A.", "Hello, B."], call_token_ttl=1.0) as env:
        twiml = await env.twilio.call("+14155550100")
        relay = twiml.find("./Connect/ConversationRelay")
        assert relay is not None
        params = {p.attrib["name"]: p.attrib["value"] for p in relay.findall("Parameter")}
        assert "voxlineToken" in params
        with structlog.testing.capture_logs() as logs:
            # The caller's number in setup cannot move the call into another caller's memory:
            # the token says who called, so this is still +14155550100's call.
            async with env.twilio.relay(twiml, **{"from": "+19995550000"}) as twilio:
                await twilio.prompt("hi")
                assert await twilio.reply() == "Hello, A."
            # The same token again (a replay), another CallSid, no token, a forged one:
            await _refused(env.twilio, twiml)
            await _refused(env.twilio, twiml, callSid="CA" + "9" * 32)
            await _refused(env.twilio, twiml, customParameters={"voxlineAgent": "shop"})
            forged = {**params, "voxlineToken": params["voxlineToken"][:-4] + "AAAA"}
            await _refused(env.twilio, twiml, customParameters=forged)
            # An unused token that expired:
            late = await env.twilio.call("+14155550100", call_sid="CA" + "7" * 32)
            await asyncio.sleep(1.2)
            await _refused(env.twilio, late, callSid="CA" + "7" * 32)
        reasons = [e["reason"] for e in logs if e["event"] == "call socket refused"]
        assert reasons == [
            "call token already used for this CallSid",
            "call token minted for another call",
            "no call token",
            "forged call token",
            "expired call token",
        ]
        await env.idle()
        [record] = await env.store.list_conversations()
        assert record.subject == "phone:+14155550100"
