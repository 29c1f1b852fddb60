"""The platform end to end: an agent created over the API, deployed on a WebSocket path, called
ConversationRelay-style, and watched whole on its listener's debug feed, client tool included."""

from __future__ import annotations

from tests.api.conftest import BOOKING, EnvFactory
from voxline.providers.llm.fake import FakeReply, FakeToolCall

PICK = FakeReply(tool_calls=[FakeToolCall("pick_slot", {"day": "friday"})])
BOOKED = "Friday at ten is yours."
FILLER = "One moment. "  # said on a voice call as soon as the model chooses a tool


async def test_a_call_on_a_websocket_listener_read_whole_from_the_feed(
    make_env: EnvFactory,
) -> None:
    async with make_env([PICK, FakeReply(text=BOOKED, token_delay=0.01)]) as env:
        agent = await env.create_agent()
        listener = await env.listen(agent["id"], websocket="/ws/booking")
        assert listener["kind"] == "websocket" and listener["address"] == "/ws/booking"
        assert listener["websocket_url"] == "wss://voice.example.test/ws/booking"
        assert listener["feed_url"].endswith(f"/api/listeners/{listener['id']}/feed")

        async with env.feed(listener["feed_url"]) as feed:
            async with env.listener_call(listener["websocket_url"]) as call:
                assert await call.reply() == "Hi, this is booking."  # spoken by us, not Twilio
                await call.prompt("book me for fri", last=False)
                await call.prompt("book me for friday")

                request = await feed.until("client_tool_call")
                assert request["name"] == "pick_slot"
                assert request["arguments"] == {"day": "friday"}
                assert "reply_to" not in request  # routing stays inside the server
                await feed.send(
                    {
                        "type": "tool_result",
                        "request_id": request["request_id"],
                        "result": {"slot": "10:00"},
                    }
                )
                assert await call.reply() == FILLER + BOOKED
            ended = await feed.until("call_ended")

        kinds = [e["type"] for e in feed.events]
        call_id = ended["call_id"]
        assert all(e["call_id"] == call_id for e in feed.events)
        assert (
            kinds.index("call_started")
            < kinds.index("client_tool_call")
            < kinds.index("call_ended")
        )
        utterances = [(e["text"], e["final"]) for e in feed.events if e["type"] == "user_utterance"]
        assert utterances == [("book me for fri", False), ("book me for friday", True)]
        [tool_call] = [e for e in feed.events if e["type"] == "tool_call"]
        assert tool_call["name"] == "pick_slot"
        [result] = [e for e in feed.events if e["type"] == "tool_result"]
        assert result["is_error"] is False and "10:00" in result["content"]
        spoken = "".join(e["delta"] for e in feed.events if e["type"] == "bot_text")
        assert spoken == "Hi, this is booking." + FILLER + BOOKED
        assert any(e["type"] == "state" and e["to"] == "thinking" for e in feed.events)
        assert any(e["type"] == "metrics" and e["kind"] == "llm" for e in feed.events)
        assert [e["seq"] for e in feed.events] == sorted(e["seq"] for e in feed.events)

        # the model saw the client's answer as the tool result
        tool_message = next(m for m in env.llm.requests[-1].messages if m.role == "tool")
        assert "10:00" in (tool_message.content or "")

        # and the call is on record, turns included
        await env.hub.drain(5)
        detail = (await env.call("GET", f"/api/calls/{call_id}")).json()
        assert detail["agent"] == "booking" and detail["channel"] == "voice"
        assert [t["kind"] for t in detail["turns"]] == [
            "bot_text",
            "user_text",
            "bot_text",
            "tool_call",
            "tool_result",
            "bot_text",
        ]


async def test_a_client_tool_nobody_answers_times_out(make_env: EnvFactory) -> None:
    spec = {**BOOKING, "tools": [{**BOOKING["tools"][0], "timeout": 0.3}], "greeting": None}
    async with make_env([PICK, "Sorry, I could not check the calendar."]) as env:
        agent = await env.create_agent(spec)
        listener = await env.listen(agent["id"], websocket="/ws/booking")
        async with (
            env.feed(listener["feed_url"]) as feed,
            env.listener_call(listener["websocket_url"]) as call,
        ):
            await call.prompt("book me for friday")
            await feed.until("client_tool_call")  # seen, never answered
            result = await feed.until("tool_result")
            assert result["is_error"] is True
            assert result["content"] == "the tool failed: timed out after 0.3s"
            assert await call.reply() == FILLER + "Sorry, I could not check the calendar."


async def test_a_client_tool_error_reaches_the_model(make_env: EnvFactory) -> None:
    async with make_env([PICK, "That day is closed."]) as env:
        agent = await env.create_agent({**BOOKING, "greeting": None})
        listener = await env.listen(agent["id"], websocket="/ws/booking")
        async with (
            env.feed(listener["feed_url"]) as feed,
            env.listener_call(listener["websocket_url"]) as call,
        ):
            await call.prompt("friday please")
            request = await feed.until("client_tool_call")
            await feed.send(
                {"type": "tool_result", "request_id": request["request_id"], "error": "closed"}
            )
            await feed.send({"type": "tool_result", "request_id": "req_unknown", "result": 1})
            assert (await feed.until("error"))["message"].startswith("no pending tool call")
            result = await feed.until("tool_result")
            assert result["content"] == "the tool failed: ClientToolError: closed"
            assert await call.reply() == FILLER + "That day is closed."
