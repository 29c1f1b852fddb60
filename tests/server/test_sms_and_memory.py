"""SMS conversations, and one memory per caller across SMS and voice."""

from __future__ import annotations

import base64

from tests.server.conftest import EnvFactory
from tests.server.twilio_emulator import ACCOUNT, TOKEN
from voxline.providers.llm.fake import FakeReply


async def test_an_sms_conversation(make_env: EnvFactory) -> None:
    async with make_env(["Hi! We open at nine.", "Yes, until six."]) as env:
        assert await env.twilio.text("when do you open?") == ["Hi! We open at nine."]
        assert await env.twilio.text("and on saturday?", "(415) 555-0100") == ["Yes, until six."]
        await env.idle()
        [conversation] = await env.store.list_conversations(subject="phone:+14155550100")
        assert conversation.channel == "sms"
        turns = await env.store.load_turns(conversation.id)
        assert [t["data"]["content"] for t in turns] == [
            "when do you open?",
            "Hi! We open at nine.",
            "and on saturday?",
            "Yes, until six.",
        ]  # no greeting on SMS: the first reply answers the first message
        second = env.llm.requests[1].messages
        assert [m.content for m in second if m.role == "user"] == [
            "when do you open?",
            "and on saturday?",
        ]


async def test_a_long_reply_is_split_by_sentence(make_env: EnvFactory) -> None:
    sentence = "This sentence is part of a very long answer about our return policy. "
    long_text = (sentence * 40).strip()  # ~2,800 characters
    async with make_env([long_text]) as env:
        bodies = await env.twilio.text("tell me everything")
        assert len(bodies) == 2
        assert all(len(b) <= 1600 for b in bodies)
        assert all(b.endswith("policy.") for b in bodies)
        assert " ".join(bodies) == long_text


async def test_a_slow_reply_is_sent_through_the_rest_api(make_env: EnvFactory) -> None:
    slow = FakeReply(text="Sorry for the wait: here is your answer.", ttft=0.5)
    async with make_env([slow], sms_reply_timeout=0.1) as env:
        assert await env.twilio.text("hello?") == []  # Twilio is not kept waiting
        [sent] = await env.rest.wait()
        assert sent == {
            "To": "+14155550100",
            "From": "+18005550101",
            "Body": "Sorry for the wait: here is your answer.",
        }
        scheme, _, credentials = env.rest.auth[0].partition(" ")
        assert scheme == "Basic"
        assert base64.b64decode(credentials).decode() == f"{ACCOUNT}:{TOKEN}"


async def test_sms_history_is_in_the_context_of_a_later_call(make_env: EnvFactory) -> None:
    script = [
        "Your order A17 ships tomorrow.",
        "Great, talk soon.",
        "Welcome back! Calling about order A17?",
        "Yes, it ships tomorrow.",
    ]
    async with make_env(script) as env:
        await env.twilio.text("where is order A17?", "+1 415 555 0100")
        await env.twilio.text("thanks!", "415-555-0100")
        twiml = await env.twilio.call("(415) 555-0100")
        relay = twiml.find("./Connect/ConversationRelay")
        assert relay is not None and "welcomeGreeting" not in relay.attrib
        async with env.twilio.relay(twiml, **{"from": "4155550100"}) as twilio:
            assert await twilio.reply() == "Welcome back! Calling about order A17?"
            await twilio.prompt("is it on its way?")
            assert await twilio.reply() == "Yes, it ships tomorrow."
        await env.idle()
        assert len(await env.store.list_conversations(subject="phone:+14155550100")) == 1
        greeting_request = env.llm.requests[2].messages
        contents = [m.content for m in greeting_request]
        assert "where is order A17?" in contents
        assert "Your order A17 ships tomorrow." in contents
        assert "thanks!" in contents


async def test_a_call_is_in_the_context_of_a_later_sms(make_env: EnvFactory) -> None:
    script = ["It is open until six.", "As I said on the phone: until six."]
    async with make_env(script) as env:
        async with env.twilio.relay(await env.twilio.call("+14155550100")) as twilio:
            await twilio.prompt("how late are you open?")
            assert await twilio.reply() == "It is open until six."
        await env.idle()
        assert await env.twilio.text("sorry, until when?", "415.555.0100") == [
            "As I said on the phone: until six."
        ]
        contents = [m.content for m in env.llm.requests[-1].messages]
        assert "how late are you open?" in contents
        assert "Hi, this is the shop. How can I help?" in contents  # the spoken welcome


async def test_a_withheld_number_gets_no_shared_memory(make_env: EnvFactory) -> None:
    async with make_env(["First.", "Second."]) as env:
        await env.twilio.text("hello", "+266696687")
        await env.twilio.text("hello again", "+266696687")
        await env.idle()
        assert [m.content for m in env.llm.requests[1].messages if m.role == "user"] == [
            "hello again"
        ]
