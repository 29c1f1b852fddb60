"""Calls that run at the same time never leak into each other: one live session per connection
over one memory per caller (issue: "Live calls that never leak into each other")."""

from __future__ import annotations

import asyncio
import contextlib

from tests.server.conftest import EnvFactory
from tests.server.twilio_emulator import RelayClient
from voxline.providers.llm.base import LLMRequest
from voxline.providers.llm.fake import FakeReply

CALL_A = "CA" + "a" * 32
CALL_B = "CA" + "b" * 32
PIN = "Your PIN is 4321, keep it safe."
HOURS = "We are open from nine to five."


def by_question(request: LLMRequest) -> FakeReply:
    """Answers by what the latest user message asked, slowly enough to overlap."""
    question = next(m.content or "" for m in reversed(request.messages) if m.role == "user")
    if "pin" in question:
        return FakeReply(text=PIN, token_delay=0.05)
    if "hours" in question:
        return FakeReply(text=HOURS, token_delay=0.05)
    if "address" in question:
        return FakeReply(text="We are at 1 Main Street.")
    return FakeReply(text="Anything else?")


async def drain(client: RelayClient, quiet: float = 0.4) -> list[dict[str, object]]:
    """Everything the client receives until the socket is quiet for `quiet` seconds."""
    got: list[dict[str, object]] = []
    with contextlib.suppress(TimeoutError):
        while True:
            async with asyncio.timeout(quiet):
                got.append(await client.next())
    return got


async def test_two_calls_from_one_number_never_hear_each_other(make_env: EnvFactory) -> None:
    async with make_env(by_question) as env:
        twiml_a = await env.twilio.call(call_sid=CALL_A)
        twiml_b = await env.twilio.call(call_sid=CALL_B)
        async with (
            env.twilio.relay(twiml_a, callSid=CALL_A) as a,
            env.twilio.relay(twiml_b, callSid=CALL_B) as b,
        ):
            await a.prompt("what is my pin?")
            await asyncio.sleep(0.12)  # A's reply is streaming when B asks
            await b.prompt("what are your hours?")
            heard_a, heard_b = await asyncio.gather(a.reply(), b.reply())
            assert heard_a == PIN
            assert heard_b == HOURS
            assert await drain(a) == [] and await drain(b) == []  # nothing else arrives

            # A hangs up while B's next reply streams: B's reply is not cut.
            await b.prompt("and the hours again?")
            first = await b.next()
            assert first["type"] == "text"
        # (A's socket closed with the `async with`; B closed right after — run the hang-up
        # case on its own below.)
        await env.idle()
        conversation = await env.conversation_id()
        turns = await env.store.load_turns(conversation)
        seqs = [t["seq"] for t in turns]
        assert len(seqs) == len(set(seqs))
        by_connection: dict[str, list[str]] = {}
        for turn in turns:
            if turn["kind"] in ("user_text", "bot_text"):
                by_connection.setdefault(turn["data"]["connection"], []).append(
                    turn["data"]["content"]
                )
        assert by_connection[CALL_A][-2:] == ["what is my pin?", PIN]
        assert "what are your hours?" in by_connection[CALL_B]
        assert PIN not in by_connection[CALL_B]


async def test_one_caller_hanging_up_does_not_touch_the_other(make_env: EnvFactory) -> None:
    async with make_env(by_question) as env:
        twiml_a = await env.twilio.call(call_sid=CALL_A)
        twiml_b = await env.twilio.call(call_sid=CALL_B)
        async with env.twilio.relay(twiml_b, callSid=CALL_B) as b:
            async with env.twilio.relay(twiml_a, callSid=CALL_A) as a:
                await a.prompt("what is my pin?")
                await b.prompt("what are your hours?")
                assert (await a.next())["type"] == "text"
            # A is gone, mid-reply; B's reply goes on to the end.
            assert await b.reply() == HOURS
            await b.prompt("what is my pin?")
            assert await b.reply() == PIN
        await env.idle()
        turns = await env.store.load_turns(await env.conversation_id())
        a_bot = [
            t["data"]
            for t in turns
            if t["kind"] == "bot_text" and t["data"]["connection"] == CALL_A
        ]
        assert a_bot and a_bot[-1]["interrupted"]  # A's cut reply kept what A heard
        b_bot = [
            t["data"]["content"]
            for t in turns
            if t["kind"] == "bot_text" and t["data"]["connection"] == CALL_B
        ]
        assert b_bot[-2:] == [HOURS, PIN]


async def test_an_sms_during_a_call_is_answered_by_sms_only(make_env: EnvFactory) -> None:
    async with make_env(by_question) as env:
        twiml = await env.twilio.call(call_sid=CALL_A)
        async with env.twilio.relay(twiml, callSid=CALL_A) as call:
            await call.prompt("what is my pin?")
            first = await call.next()  # the call's reply is streaming
            assert first["type"] == "text"
            texted = await env.twilio.text("what is your address?")
            assert texted == ["We are at 1 Main Street."]
            rest = await call.reply()
            assert (str(first["token"]) + rest) == PIN  # the SMS did not cut the call's reply
            assert await drain(call) == []  # and its answer was not spoken on the call
            await call.prompt("thanks")
            assert await call.reply() == "Anything else?"
        await env.idle()
        # The call's next request saw the SMS exchange.
        last = env.llm.requests[-1].messages
        contents = [m.content for m in last]
        assert "what is your address?" in contents
        assert "We are at 1 Main Street." in contents
        turns = await env.store.load_turns(await env.conversation_id())
        sms_user = [
            t for t in turns if t["kind"] == "user_text" and t["data"]["content"].endswith("ss?")
        ]
        assert [t["data"]["channel"] for t in sms_user] == ["sms"]
        assert len({t["seq"] for t in turns}) == len(turns)
