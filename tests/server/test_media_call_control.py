"""Call control on Media Streams calls, over real sockets: the agent hangs up and transfers
through Twilio's REST Calls API (a loopback stand-in that checks the form and the basic auth),
and the stream is closed from our side. Text injected over the API reaches a live call.

The speech models are the loudness-keyed fakes of browser.py (the pipeline is real, the models
are not the point here); the phone is the Media Streams emulator, given its own call and
stream SIDs per call so that two calls can be told apart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.client import ClientConnection

from tests.server import media_emulator
from tests.server.browser import SECONDS_PER_CHAR, fake_speech
from tests.server.conftest import API_KEY, Env, EnvFactory, shop_agent
from tests.server.media_emulator import MediaClient, media_call
from tests.server.twilio_emulator import (
    ACCOUNT,
    TOKEN,
    WAIT,
    RestStandIn,
    eventually,
    running,
    voice_params,
)
from voxline import Agent
from voxline.agents.spec import AgentSpec
from voxline.providers.llm.fake import FakeReply, FakeToolCall
from voxline.voice.providers import SpeechProviders

CALLER = "+14155550100"
GREETING = "Hi, this is the shop. How can I help?"  # shop_agent's
HUMAN = "+18005550199"  # shop_agent's transfer_to
GOODBYE = "Goodbye, thanks for calling."
AFTER = "Take care."
AUTH = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
CALLS_PATH = "/2010-04-01/Accounts/{account}/Calls/{call}.json"


@dataclass
class Update:
    account: str
    call_sid: str
    form: dict[str, str]
    auth: str
    heard: int  # bytes the phone of that call had played when the update arrived
    marks_pending: int  # marks sent to it and not yet echoed (audio still to play)


@dataclass
class TwilioRest(RestStandIn):
    """Twilio's Messages and Calls APIs on loopback. A call update is recorded with what its
    phone had played at that moment; `refuse` makes Twilio answer updates with that error."""

    updates: list[Update] = field(default_factory=list)
    phones: dict[str, MediaClient] = field(default_factory=dict)  # by call SID
    refuse: tuple[int, dict[str, Any]] | None = None

    def app(self) -> Starlette:
        async def update(request: Request) -> JSONResponse:
            form = await request.form()
            call_sid = request.path_params["call"]
            phone = self.phones.get(call_sid)
            self.updates.append(
                Update(
                    request.path_params["account"],
                    call_sid,
                    {k: str(v) for k, v in form.items()},
                    request.headers.get("authorization", ""),
                    len(phone.heard) if phone else -1,
                    len(phone.events("mark")) - len(phone.echoed) if phone else -1,
                )
            )
            if self.refuse is not None:
                return JSONResponse(self.refuse[1], status_code=self.refuse[0])
            return JSONResponse({"sid": call_sid, "status": "in-progress"})

        app = super().app()
        app.router.routes.append(Route(CALLS_PATH, update, methods=["POST"]))
        return app


class Phone(MediaClient):
    """The emulator's phone with a call and stream SID of its own."""

    numbers: ClassVar[Iterator[int]] = itertools.count(1)
    upcoming: ClassVar[int] = 0  # the number the voice webhook was called with

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(ws)
        number = self.upcoming
        self.call_sid = f"CA{number:032x}"
        self.stream_sid = f"MZ{number:032x}"

    async def _emit(self, event: str, **fields: Any) -> None:
        for part in ("start", "stop"):
            if part in fields:
                fields[part] = fields[part] | {"callSid": self.call_sid}
        if "start" in fields:
            fields["start"]["streamSid"] = self.stream_sid
        self._sequence += 1
        numbered = {"event": event, "sequenceNumber": str(self._sequence)}
        await self.send(numbered | {"streamSid": self.stream_sid} | fields)


@pytest.fixture(autouse=True)
def phones_and_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every media call's phone is a `Phone`, and every call's speech models are the fakes."""

    async def load(spec: AgentSpec, *, vad: str = "local", **_: object) -> SpeechProviders:
        return fake_speech()

    monkeypatch.setattr(media_emulator, "MediaClient", Phone)
    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", load)


@pytest.fixture
async def rest() -> AsyncIterator[tuple[TwilioRest, str]]:
    """Replaces conftest's stand-in (the server's REST base URL points here)."""
    stand_in = TwilioRest()
    async with running(stand_in.app()) as (base, _):
        yield stand_in, base


def media_agent(**twilio: Any) -> Agent:
    return shop_agent(transport="media_streams", **twilio)


def stand_in(env: Env) -> TwilioRest:
    assert isinstance(env.rest, TwilioRest)
    return env.rest


@contextlib.asynccontextmanager
async def phone_call(env: Env, caller: str = CALLER) -> AsyncIterator[Phone]:
    """Dial in, and open the Media Stream the TwiML names, as Twilio does (the webhook and the
    stream carry the same CallSid: the call token is minted for it)."""
    Phone.upcoming = next(Phone.numbers)
    params = voice_params(caller) | {"CallSid": f"CA{Phone.upcoming:032x}"}
    response = await env.twilio.post("/twilio/voice", params)
    assert response.status_code == 200, response.text
    async with media_call(env.twilio, ET.fromstring(response.text)) as phone:
        assert isinstance(phone, Phone)
        stand_in(env).phones[phone.call_sid] = phone
        yield phone


async def greeted(phone: Phone) -> int:
    """Wait for the greeting to have played; returns the bytes heard so far."""
    await eventually(lambda: bool(phone.events("media")))
    await phone.quiet()
    return len(phone.heard)


async def closed_by_us(phone: Phone) -> bool:
    """Wait for the socket to close; True when the server closed it (normally)."""
    async with asyncio.timeout(WAIT):
        await phone.ws.wait_closed()
    return bool(phone.ws.protocol.close_rcvd_then_sent) and phone.ws.close_code == 1000


def spoken_bytes(*texts: str) -> int:
    """About how much mu-law the fake TTS makes of `texts` (a frame's padding less)."""
    return sum(round(len(text) * SECONDS_PER_CHAR * 8000) for text in texts) - 160


async def bot_texts(env: Env) -> list[tuple[str, bool]]:
    await env.idle()
    turns = await env.store.load_turns(await env.conversation_id())
    return [
        (t["data"]["content"], bool(t["data"].get("interrupted")))
        for t in turns
        if t["kind"] == "bot_text"
    ]


def end_call(reason: str = "the caller is done") -> FakeToolCall:
    return FakeToolCall("end_call", {"reason": reason})


def transfer(reason: str = "wants a refund") -> FakeToolCall:
    return FakeToolCall("transfer_to_human", {"reason": reason})


async def test_end_call_hangs_up_over_rest_after_the_goodbye_and_closes_the_stream(
    make_env: EnvFactory,
) -> None:
    script = [FakeReply(text=GOODBYE, tool_calls=[end_call()]), AFTER]
    relay_only = {
        "send_digits": True,
        "sounds": {"hold": "https://example.test/hold.mp3"},
        "languages": [{"code": "es-ES"}],
    }
    async with make_env(script, agents=[media_agent(**relay_only)]) as env:
        async with phone_call(env) as phone:
            before = await greeted(phone)
            await phone.press("1")
            assert await closed_by_us(phone)
        [update] = stand_in(env).updates
        assert (update.account, update.call_sid) == (ACCOUNT, phone.call_sid)
        assert update.auth == AUTH
        assert update.form == {"Twiml": "<Response><Hangup /></Response>"}
        # the whole goodbye, both steps of the reply, had played when the call was hung up
        assert update.marks_pending == 0
        assert update.heard - before >= spoken_bytes(GOODBYE, AFTER)
        assert await bot_texts(env) == [(GREETING, False), (GOODBYE, False), (AFTER, False)]
        # what a stream can do is offered; ConversationRelay's own features are not
        offered = {tool.name for tool in env.llm.requests[0].tools}
        assert {"end_call", "transfer_to_human", "lookup_order"} <= offered
        assert not offered & {"send_digits", "switch_language", "play_sound"}


async def test_transfer_dials_the_human_over_rest_and_records_the_handoff(
    make_env: EnvFactory,
) -> None:
    script = [FakeReply(text="Let me get you a person.", tool_calls=[transfer()]), "One moment."]
    async with make_env(script, agents=[media_agent()]) as env:
        async with phone_call(env) as phone:
            await greeted(phone)
            await phone.press("0")
            assert await closed_by_us(phone)
        [update] = stand_in(env).updates
        assert update.call_sid == phone.call_sid and update.auth == AUTH
        assert update.form == {"Twiml": f"<Response><Dial>{HUMAN}</Dial></Response>"}
        assert update.marks_pending == 0
        await env.idle()
        turns = await env.store.load_turns(await env.conversation_id())
        [handoff] = [t["data"] for t in turns if t["kind"] == "handoff"]
        assert handoff["target"] == "human" and handoff["reason"] == "wants a refund"
        assert handoff["data"]["reasonCode"] == "live-agent-handoff"
        assert handoff["data"]["conversationId"] == await env.conversation_id()


async def test_a_refused_transfer_keeps_the_call_and_the_agent_says_so(
    make_env: EnvFactory,
) -> None:
    sorry = "Sorry, I could not put you through."
    script = [FakeReply(text="One moment.", tool_calls=[transfer()]), "Transferring.", sorry]
    async with make_env(script, agents=[media_agent()]) as env:
        refusal = {"code": 13223, "message": "Dial: Invalid phone number format", "status": 400}
        stand_in(env).refuse = (400, refusal)
        async with phone_call(env) as phone:
            await greeted(phone)
            await phone.press("0")
            await eventually(lambda: len(env.llm.requests) == 3)
            heard = len(phone.heard)
            await phone.quiet()
            assert len(phone.heard) - heard >= spoken_bytes(sorry) // 2
            assert phone.ws.close_code is None  # the caller is still on the line
            await phone.stop()
        [update] = stand_in(env).updates
        assert update.form["Twiml"].startswith("<Response><Dial>")
        note = env.llm.requests[2].messages[-1]
        assert note.role == "system"
        assert "did not go through" in (note.content or "")
        assert "Invalid phone number format" in (note.content or "")
        assert (sorry, False) in await bot_texts(env)


async def test_end_call_on_one_of_two_calls_from_one_number_leaves_the_other_alone(
    make_env: EnvFactory,
) -> None:
    script = [
        "Welcome back.",  # the second call: a returning caller, greeted by the model
        FakeReply(text="Bye.", tool_calls=[end_call()]),
        "Bye now.",
        "Still here.",
    ]
    async with make_env(script, agents=[media_agent()]) as env:
        async with contextlib.AsyncExitStack() as calls:
            first = await calls.enter_async_context(phone_call(env))
            await greeted(first)
            second = await calls.enter_async_context(phone_call(env))
            await eventually(lambda: len(env.llm.requests) == 1)
            await greeted(second)
            await first.press("9")
            assert await closed_by_us(first)
            await asyncio.sleep(0.3)
            assert second.ws.close_code is None
            heard = len(second.heard)
            await second.press("1")
            await eventually(lambda: len(env.llm.requests) == 4)
            await second.quiet()
            assert len(second.heard) - heard >= spoken_bytes("Still here.")
            assert second.ws.close_code is None
            await second.stop()
        assert first.call_sid != second.call_sid
        assert [u.call_sid for u in stand_in(env).updates] == [first.call_sid]


async def test_text_injected_over_the_api_is_answered_aloud_on_the_call(
    make_env: EnvFactory,
) -> None:
    answer = "Your taxi is outside."
    async with make_env([answer], agents=[media_agent()]) as env:
        async with phone_call(env) as phone:
            heard = await greeted(phone)
            call_id = await env.conversation_id()
            async with httpx.AsyncClient(base_url=env.twilio.base) as client:
                response = await client.post(
                    f"/api/calls/{call_id}/messages",
                    json={"text": "Is my taxi here?"},
                    headers={"Authorization": f"Bearer {API_KEY}"},
                )
            assert response.status_code == 202, response.text
            await eventually(lambda: len(phone.heard) - heard >= spoken_bytes(answer))
            await phone.quiet()
            await phone.stop()
        await env.idle()
        turns = await env.store.load_turns(call_id)
        said = [(t["kind"], t["data"].get("content")) for t in turns]
        assert said[-2:] == [("user_text", "Is my taxi here?"), ("bot_text", answer)]


async def test_without_credentials_end_call_closes_the_stream_and_transfer_is_not_offered(
    make_env: EnvFactory,
) -> None:
    script = [FakeReply(text=GOODBYE, tool_calls=[end_call()]), AFTER]
    async with make_env(script, agents=[media_agent()], twilio_account_sid=None) as env:
        async with phone_call(env) as phone:
            await greeted(phone)
            await phone.press("1")
            assert await closed_by_us(phone)
        assert stand_in(env).updates == []
        offered = {tool.name for tool in env.llm.requests[0].tools}
        assert "end_call" in offered and "transfer_to_human" not in offered
        assert await bot_texts(env) == [(GREETING, False), (GOODBYE, False), (AFTER, False)]


def test_a_relay_and_a_media_call_are_told_the_same_about_ending_and_transferring() -> None:
    """One definition serves both channels: what the model reads does not depend on it."""
    from voxline.channels.media_tools import media_tools
    from voxline.channels.relay_tools import relay_tools

    agent = media_agent()
    relay = {t.name: t.definition() for t in relay_tools(agent.spec, agent.spec.twilio, no_call)}
    media = {t.name: t.definition() for t in media_tools(agent.spec.twilio, no_call, rest=True)}
    assert set(media) == {"end_call", "transfer_to_human"}
    assert all(media[name] == relay[name] for name in media)


def no_call(connection_id: str) -> None:
    return None


async def test_a_media_stream_is_admitted_once_by_the_token_of_its_own_call(
    make_env: EnvFactory,
) -> None:
    """The `start` parameters are unsigned: the call token decides whose call it is, and each
    CallSid is admitted once."""
    async with make_env([FakeReply(text="Hi.")], agents=[media_agent()]) as env:
        Phone.upcoming = next(Phone.numbers)
        params = voice_params(CALLER) | {"CallSid": f"CA{Phone.upcoming:032x}"}
        twiml = ET.fromstring((await env.twilio.post("/twilio/voice", params)).text)
        with structlog.testing.capture_logs() as logs:
            async with media_call(env.twilio, twiml) as first:
                await greeted(first)  # admitted
            async with media_call(env.twilio, twiml) as replayed:  # same token, same CallSid
                await replayed.ws.wait_closed()
            assert replayed.ws.close_code == 1008
            Phone.upcoming = next(Phone.numbers)  # a stream of another call, old token
            async with media_call(env.twilio, twiml) as other:
                await other.ws.wait_closed()
            assert other.ws.close_code == 1008
        reasons = [e["reason"] for e in logs if e["event"] == "call socket refused"]
        assert reasons == [
            "call token already used for this CallSid",
            "call token minted for another call",
        ]
