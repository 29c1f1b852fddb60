"""The agent ends a browser call: its goodbye plays out, the page gets `end`, the socket closes.

A real loopback server, the browser stand-in of browser.py (which confirms each frame as played
when it arrives) and its loudness-keyed fake speech models.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.server.conftest import EnvFactory
from tests.server.twilio_emulator import WAIT
from voxline import Agent
from voxline.agents.spec import AgentSpec
from voxline.providers.llm.fake import FakeReply, FakeToolCall
from voxline.voice.providers import SpeechProviders

from .browser import RATE, SECONDS_PER_CHAR, browser_call, fake_speech

GREETING = "Hello there, how can I help?"
GOODBYE = "Glad I could help, goodbye."
AFTER = "Have a nice day."


@pytest.fixture(autouse=True)
def models(monkeypatch: pytest.MonkeyPatch) -> None:
    async def load(spec: AgentSpec, *, vad: str = "local", **_: object) -> SpeechProviders:
        return fake_speech()

    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", load)


def samples(*texts: str) -> int:
    """What the fake TTS makes of `texts`."""
    return sum(round(len(text) * SECONDS_PER_CHAR * RATE) for text in texts)


def helper(**twilio: object) -> Agent:
    return Agent(
        name="helper",
        instructions="You help people in their browser.",
        greeting=GREETING,
        twilio={"transfer_to": "+18005550199", **twilio},
    )


async def test_end_call_plays_the_goodbye_then_sends_end_and_closes_the_socket(
    make_env: EnvFactory,
) -> None:
    end_call = FakeToolCall("end_call", {"reason": "the user is done"})
    script = [FakeReply(text=GOODBYE, tool_calls=[end_call]), AFTER]
    async with make_env(script, agents=[helper()]) as env:
        async with browser_call(env.twilio.base) as call:
            await call.wait_for(lambda: call.bot_audio().size >= samples(GREETING))
            await asyncio.sleep(0.1)  # its last confirmations reach the server
            await call.type("that is all, thanks")
            end = await call.event("end")
            async with asyncio.timeout(WAIT):
                await call.ws.wait_closed()
        assert end == {"type": "end", "reason": "the user is done"}
        assert call.events[-1] is end  # nothing follows it
        assert call.ws.protocol.close_rcvd_then_sent  # the server closed the socket
        assert call.ws.close_code == 1000
        assert call.ws.close_reason == "the agent ended the call"
        # the goodbye (both steps of the reply) had all gone out, and been confirmed, by then;
        # a streamed reply's opening clause is voiced on its own (the joining space is not)
        opening, rest = GOODBYE.split(", ")
        assert call.bot_audio().size >= samples(GREETING, f"{opening},", rest, AFTER)
        assert list(call.transcript("bot").values()) == [GREETING, GOODBYE, AFTER]
        offered = {tool.name for tool in env.llm.requests[0].tools}
        assert "end_call" in offered and "transfer_to_human" not in offered


async def test_an_agent_with_end_call_off_is_not_offered_it_in_the_browser(
    make_env: EnvFactory,
) -> None:
    async with make_env(["Hi."], agents=[helper(end_call=False)]) as env:
        async with browser_call(env.twilio.base) as call:
            await call.type("hello")
            await call.event("transcript", role="bot", text="Hi.")
        assert "end_call" not in {tool.name for tool in env.llm.requests[0].tools}
