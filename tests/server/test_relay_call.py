"""ConversationRelay calls driven over a real WebSocket the way Twilio drives them."""

from __future__ import annotations

import json

from tests.server.conftest import EnvFactory
from voxline.providers.llm.fake import FakeReply, FakeToolCall

SHIPPED = "Your order A17 shipped yesterday and arrives on Friday, as planned."


async def test_call_with_a_tool_call_and_a_barge_in(make_env: EnvFactory) -> None:
    script = [
        FakeReply(tool_calls=[FakeToolCall("lookup_order", {"order_id": "A17"})]),
        FakeReply(text=SHIPPED, token_delay=0.05),
        "Sure, what else?",
    ]
    async with make_env(script) as env:
        twiml = await env.twilio.call()
        relay = twiml.find("./Connect/ConversationRelay")
        assert relay is not None
        assert relay.attrib["welcomeGreeting"] == "Hi, this is the shop. How can I help?"
        async with env.twilio.relay(twiml) as twilio:
            await twilio.prompt("where is my ord", last=False)  # partial: no reply
            await twilio.prompt("where is my order A17?")
            heard = ""
            while len(heard.split()) < 6:  # "One moment." (the tool filler), then the answer
                message = await twilio.next()
                assert message["type"] == "text" and message["last"] is False
                heard += message["token"]
            await twilio.send(
                {
                    "type": "interrupt",
                    "utteranceUntilInterrupt": "One moment. Your order A17",
                    "durationUntilInterruptMs": "920",
                }
            )
            await twilio.prompt("and can you also check B2?")
            # tokens of the cut reply may still be in flight; the next talk cycle ends "last"
            tail = ""
            while not tail.endswith("Sure, what else?"):
                message = await twilio.next()
                tail = tail + message["token"] if message["token"] else tail
        await env.idle()
        turns = await env.store.load_turns(await env.conversation_id())
        kinds = [(t["kind"], t["data"].get("content")) for t in turns]
        assert kinds[0] == ("bot_text", "Hi, this is the shop. How can I help?")
        assert [c for k, c in kinds if k == "user_text"] == [
            "where is my order A17?",  # the partial prompt made no turn of its own
            "and can you also check B2?",
        ]
        assert [t["data"]["name"] for t in turns if t["kind"] == "tool_result"] == ["lookup_order"]
        cut = [t for t in turns if t["kind"] == "bot_text" and t["data"]["interrupted"]]
        assert [t["data"]["content"] for t in cut] == ["Your order A17"]
        last_request = env.llm.requests[-1].messages
        assert [m.content for m in last_request if m.role == "assistant"][-1] == "Your order A17"
        tool_message = next(m for m in last_request if m.role == "tool")
        assert "shipped yesterday" in (tool_message.content or "")


async def test_dtmf_is_a_turn_and_the_agent_answers(make_env: EnvFactory) -> None:
    async with make_env(["You pressed two: billing."]) as env:
        async with env.twilio.relay(await env.twilio.call()) as twilio:
            await twilio.send({"type": "dtmf", "digit": "2"})
            assert await twilio.reply() == "You pressed two: billing."
        await env.idle()
        turns = await env.store.load_turns(await env.conversation_id())
        assert any(t["kind"] == "dtmf" and t["data"]["digits"] == "2" for t in turns)
        assert env.llm.requests[0].messages[-1].content == "[keypad: 2]"


async def test_broken_frames_are_ignored_and_spoken_turns_survive(make_env: EnvFactory) -> None:
    async with make_env(["Hello there.", "Still here."]) as env:
        async with env.twilio.relay(await env.twilio.call()) as twilio:
            await twilio.prompt("hi")
            assert await twilio.reply() == "Hello there."
            await twilio.send("{not json")
            await twilio.send('["a list"]')
            await twilio.send({"type": "brandNewTwilioFeature", "x": 1})
            await twilio.send({"type": "info", "name": "agentSpeaking", "value": "off"})
            await twilio.send({"type": "error", "description": "Invalid message received"})
            await twilio.ws.send(b"\x00\x01binary")
            await twilio.prompt("are you there?")
            assert await twilio.reply() == "Still here."
            await twilio.send("x" * 70_000)  # over the 64 KiB frame limit: the server hangs up
            await twilio.ws.wait_closed()
            assert twilio.ws.close_code == 1009
        await env.idle()
        contents = [
            t["data"].get("content")
            for t in await env.store.load_turns(await env.conversation_id())
        ]
        assert contents[-4:] == ["hi", "Hello there.", "are you there?", "Still here."]


async def test_a_call_that_drops_mid_reply_keeps_its_turns(make_env: EnvFactory) -> None:
    long_reply = FakeReply(text="one two three four five six seven eight nine ten", token_delay=0.1)
    async with make_env(["First answer.", long_reply]) as env:
        async with env.twilio.relay(await env.twilio.call()) as twilio:
            await twilio.prompt("first question")
            assert await twilio.reply() == "First answer."
            await twilio.prompt("second question")
            await twilio.next()
            await twilio.next()
        # the caller hung up mid-reply (socket closed without a goodbye)
        await env.idle()
        turns = await env.store.load_turns(await env.conversation_id())
        contents = [(t["kind"], t["data"].get("content")) for t in turns]
        assert ("user_text", "first question") in contents
        assert ("bot_text", "First answer.") in contents
        assert ("user_text", "second question") in contents
        partial = turns[-1]
        assert partial["kind"] == "bot_text" and partial["data"]["interrupted"] is True
        assert partial["data"]["content"].startswith("one two")
        assert "ten" not in partial["data"]["content"]


async def test_transfer_to_human_ends_with_handoff_and_the_action_dials(
    make_env: EnvFactory,
) -> None:
    script = [
        FakeReply(
            text="Let me get you a colleague.",
            tool_calls=[FakeToolCall("transfer_to_human", {"reason": "wants a manager"})],
        ),
        "Transferring you now.",
    ]
    async with make_env(script) as env:
        twiml = await env.twilio.call()
        async with env.twilio.relay(twiml) as twilio:
            await twilio.prompt("I want a manager")
            spoken = ""
            while True:
                message = await twilio.next()
                if message["type"] == "end":
                    break
                spoken += message["token"]
            assert spoken == "Let me get you a colleague. Transferring you now."
            handoff = json.loads(message["handoffData"])
            assert handoff["reasonCode"] == "live-agent-handoff"
            assert handoff["reason"] == "wants a manager"
        connect = twiml.find("Connect")
        assert connect is not None
        action_path = "/twilio/relay/action/shop"
        assert connect.attrib["action"] == "https://voice.example.test" + action_path
        params = {
            "AccountSid": "AC0",
            "CallSid": "CA1",
            "CallStatus": "in-progress",
            "SessionId": "VX0",
            "SessionStatus": "ended",
            "SessionDuration": "12",
            "HandoffData": message["handoffData"],
        }
        response = await env.twilio.post(action_path, params)
        assert response.status_code == 200
        assert "<Dial>+18005550199</Dial>" in response.text
        params.pop("HandoffData")
        params["SessionStatus"] = "completed"
        response = await env.twilio.post(action_path, params)
        assert "<Hangup />" in response.text
        await env.idle()
        turns = await env.store.load_turns(await env.conversation_id())
        assert any(t["kind"] == "handoff" and t["data"]["target"] == "human" for t in turns)


async def test_end_call_language_digits_and_sounds(make_env: EnvFactory) -> None:
    script = [
        FakeReply(
            tool_calls=[
                FakeToolCall("switch_language", {"language": "es-ES"}),
                FakeToolCall("send_digits", {"digits": "1w2"}),
                FakeToolCall("play_sound", {"name": "hold"}),
            ]
        ),
        FakeReply(text="Adiós.", tool_calls=[FakeToolCall("end_call", {"reason": "done"})]),
        "Hasta luego.",
    ]
    agent_options = {
        "languages": [{"code": "es-ES", "tts_provider": "Google", "voice": "es-ES-Neural2-B"}],
        "send_digits": True,
        "sounds": {"hold": "https://example.test/hold.mp3"},
    }
    from tests.server.conftest import shop_agent

    async with make_env(script, agents=[shop_agent(**agent_options)]) as env:
        twiml = await env.twilio.call()
        [language] = twiml.findall("./Connect/ConversationRelay/Language")
        assert language.attrib == {
            "code": "es-ES",
            "ttsProvider": "Google",
            "voice": "es-ES-Neural2-B",
        }
        async with env.twilio.relay(twiml) as twilio:
            await twilio.prompt("en español por favor, y adiós")
            messages = []
            while not messages or messages[-1]["type"] != "end":
                messages.append(await twilio.next())
        types = [m["type"] for m in messages]
        assert types[:3] == ["language", "sendDigits", "play"]
        assert messages[0] == {
            "type": "language",
            "ttsLanguage": "es-ES",
            "transcriptionLanguage": "es-ES",
        }
        assert messages[1] == {"type": "sendDigits", "digits": "1w2"}
        assert messages[2]["source"] == "https://example.test/hold.mp3"
        spoken = "".join(m.get("token", "") for m in messages)
        assert spoken == "Adiós. Hasta luego."
        last_text = [m for m in messages if m["type"] == "text"][-1]
        assert last_text["last"] is True
        assert json.loads(messages[-1]["handoffData"])["reasonCode"] == "end-call"
