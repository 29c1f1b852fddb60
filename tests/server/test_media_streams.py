"""Media Streams calls driven over a real WebSocket the way Twilio drives them.

The speech models are real (Silero VAD, Whisper tiny.en, Piper) and the LLM is scripted. The
caller speaks espeak-ng audio cut to 8 kHz mu-law in 20 ms frames, in real time; the phone plays
what the server sends in real time and echoes marks as Twilio does, and Whisper checks what the
caller heard.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.server.conftest import Env, EnvFactory
from tests.server.media_emulator import STREAM_SID, media_call, stream_of
from tests.server.twilio_emulator import eventually, voice_params
from tests.voice.speech import espeak
from voxline import Agent
from voxline.audio import mulaw_decode, mulaw_encode, resample
from voxline.channels.twilio_relay import RETURNING_CALLER_NOTE
from voxline.providers.llm.fake import FakeReply
from voxline.providers.stt.base import STT
from voxline.voice.interruption import words

pytestmark = pytest.mark.slow

CALLER = "+14155550100"
GREETING = "Hello, this is the shop."
REPLY = "We open early in the morning, every day."
HOURS = (
    "Our store opens at nine every weekday morning. We close at six in the evening. "
    "On Saturdays we open at ten and close at four. On Sundays the store is closed all day."
)


def phone_agent(**fields: Any) -> Agent:
    return Agent(
        name="phone",
        instructions="You are the shop's phone assistant.",
        twilio={"transport": "media_streams"},
        **fields,
    )


@pytest.fixture(scope="module", autouse=True)
def stt() -> Iterator[STT]:
    """Whisper, for checking what the caller heard. Whisper and Piper are loaded here, once:
    the server shares these models, so no call waits for a model to load."""
    pytest.importorskip("faster_whisper", reason="needs the local extra")
    pytest.importorskip("piper", reason="needs the piper extra")
    from voxline.providers.stt.whisper import create_whisper_stt
    from voxline.providers.tts.piper import create_piper_tts

    whisper = create_whisper_stt(None)
    whisper.load()
    create_piper_tts().load()
    yield whisper


def caller_says(text: str, folder: Path) -> bytes:
    """`text` spoken by espeak-ng, as Twilio would carry it: 8 kHz mu-law."""
    voice = espeak(text, folder)
    return mulaw_encode(resample(voice.pcm, voice.sample_rate, 8000))


async def transcribe(stt: STT, mulaw: bytes) -> str:
    pcm = resample(mulaw_decode(mulaw), 8000, stt.sample_rate)
    return (await stt.transcribe(pcm)).text


async def dial(env: Env, caller: str = CALLER, **params: str) -> ET.Element:
    response = await env.twilio.post("/twilio/voice", voice_params(caller) | params)
    assert response.status_code == 200, response.text
    return ET.fromstring(response.text)


async def stored(env: Env) -> list[tuple[str, Any, bool | None]]:
    await env.idle()
    turns = await env.store.load_turns(await env.conversation_id())
    return [
        (
            t["kind"],
            t["data"].get("content") or t["data"].get("digits"),
            t["data"].get("interrupted"),
        )
        for t in turns
    ]


async def test_the_voice_webhook_connects_a_stream_with_parameters_not_a_query(
    make_env: EnvFactory,
) -> None:
    async with make_env(agents=[phone_agent()]) as env:
        url, parameters = stream_of(await dial(env))
        assert url == "wss://voice.example.test/twilio/media"
        token = parameters.pop("voxlineToken")  # what admits the stream: see test_security
        assert token.startswith("v1.")
        assert parameters == {
            "voxlineAgent": "phone",
            "voxlineCaller": CALLER,
            "voxlineNumber": "+18005550101",
        }
        # a call we placed: the caller is the number we dialled
        outbound = await dial(env, "+18005550101", To=CALLER, Direction="outbound-api")
        assert stream_of(outbound)[1]["voxlineCaller"] == CALLER


async def test_a_spoken_question_is_answered_aloud_in_paced_frames_with_marks(
    make_env: EnvFactory, stt: STT, tmp_path: Path
) -> None:
    question = caller_says("What time do you open tomorrow?", tmp_path)
    async with make_env([REPLY], agents=[phone_agent(greeting=GREETING)]) as env:
        async with media_call(env.twilio, await dial(env)) as phone:
            await eventually(lambda: bool(phone.events("media")))
            await phone.quiet()
            greeting = bytes(phone.heard)
            sent_before = len(phone.events("media"))
            await phone.say(question)
            await eventually(lambda: len(phone.events("media")) > sent_before)
            await phone.quiet()
            await phone.stop()
            await phone.ws.wait_closed()
        assert phone.ws.close_code == 1000
        # what the caller heard is what the agent said
        assert "shop" in words(await transcribe(stt, greeting))
        heard = words(await transcribe(stt, bytes(phone.heard[len(greeting) :])))
        assert {"early", "morning", "day"} <= set(heard), heard
        # Twilio's shapes: 20 ms mu-law frames on our stream, each followed by its mark
        media = phone.events("media")
        assert {len(base64.b64decode(r.message["media"]["payload"])) for r in media} == {160}
        assert {r.message["streamSid"] for r in phone.received} == {STREAM_SID}
        assert [r.message["event"] for r in phone.received] == ["media", "mark"] * len(media)
        marks = [r.message["mark"]["name"] for r in phone.events("mark")]
        assert len(set(marks)) == len(marks)
        assert phone.echoed == marks and not phone.cleared_marks
        # paced, not burst: the reply took about as long to arrive as it takes to play
        frames = media[sent_before:]
        assert frames[-1].at - frames[0].at >= len(frames) * 0.02 - 0.3
        turns = await stored(env)
        assert turns[0] == ("bot_text", GREETING, False)
        assert turns[1][0] == "user_text" and "tomorrow" in turns[1][1].lower()
        assert turns[2:] == [("bot_text", REPLY, False)]


async def test_caller_speech_over_the_reply_clears_it_and_trims_the_turn_to_what_played(
    make_env: EnvFactory, stt: STT, tmp_path: Path
) -> None:
    interruption = caller_says("Wait, I have a different question.", tmp_path)
    script = [FakeReply(text=HOURS), "Sure, what is your question?"]
    async with make_env(script, agents=[phone_agent()]) as env:
        async with media_call(env.twilio, await dial(env)) as phone:
            await phone.press("1")
            await eventually(lambda: len(phone.heard) >= 1.5 * 8000)
            await phone.say(interruption)
            await eventually(lambda: bool(phone.events("clear")))
            # The second request may be a speculative one made at the caller's pause, before
            # their turn ends: wait for the answer to be heard, not only asked for.
            await eventually(
                lambda: len(env.llm.requests) == 2 and len(phone.heard) > phone.heard_at_clear
            )
            await phone.quiet()
        [clear] = phone.events("clear")
        assert clear.at > phone.said_at[0]
        played = bytes(phone.heard[: phone.heard_at_clear])
        turns = await stored(env)
        assert turns[0] == ("dtmf", "1", None)
        kind, cut, interrupted = turns[1]
        assert kind == "bot_text" and interrupted
        assert HOURS.startswith(cut) and len(cut) < len(HOURS)
        # the turn keeps the words the caller heard: about what Whisper hears in the played audio
        heard = words(await transcribe(stt, played))
        assert abs(len(words(cut)) - len(heard)) <= 3, (cut, heard)
        assert turns[2][0] == "user_text" and "question" in words(turns[2][1])
        assert turns[3] == ("bot_text", "Sure, what is your question?", False)
        assert env.llm.requests[1].messages[-2].content == cut


async def test_a_key_press_is_a_turn_and_broken_frames_are_ignored(
    make_env: EnvFactory,
) -> None:
    early: list[dict[str, Any]] = [
        {"event": "media", "media": {"payload": "AP8="}},
        {"event": "mark"},
    ]
    async with make_env(["You pressed two."], agents=[phone_agent()]) as env:
        async with media_call(env.twilio, await dial(env), early=early) as phone:
            await phone.send("{not json")
            await phone.send('["a list"]')
            await phone.send({"event": "brandNewTwilioFeature", "x": 1})
            for payload in ("not base64!", "abc", base64.b64encode(b"\xff" * 159).decode()):
                await phone.send({"event": "media", "media": {"payload": payload}})
            await phone.send({"event": "media", "media": {"track": "outbound", "payload": "AP8="}})
            await phone.send({"event": "mark", "mark": {"name": "never-sent"}})
            await phone.send({"event": "start", "start": {"streamSid": "MZ-other"}})
            await phone.ws.send(b"\x00\x01binary")
            await phone.press("2")
            await eventually(lambda: bool(phone.events("media")))
            await phone.quiet()
            assert phone.echoed and not phone.events("clear")
            await phone.send("x" * 70_000)  # over the 64 KiB frame limit: the server hangs up
            await phone.ws.wait_closed()
            assert phone.ws.close_code == 1009
        assert await stored(env) == [("dtmf", "2", None), ("bot_text", "You pressed two.", False)]
        assert env.llm.requests[0].messages[-1].content == "[keypad: 2]"


async def test_a_call_that_drops_mid_reply_keeps_the_words_played(make_env: EnvFactory) -> None:
    async with make_env([HOURS], agents=[phone_agent()]) as env:
        async with media_call(env.twilio, await dial(env)) as phone:
            await phone.press("1")
            await eventually(lambda: len(phone.heard) >= 8000)
        # the socket closed without a stop: the caller hung up
        [dtmf, (kind, cut, interrupted)] = await stored(env)
        assert dtmf == ("dtmf", "1", None)
        assert kind == "bot_text" and interrupted
        assert HOURS.startswith(cut) and 0 < len(cut) < len(HOURS) // 2


async def test_a_caller_who_texted_first_is_greeted_with_that_context(
    make_env: EnvFactory,
) -> None:
    script = ["Noted: order A17.", "Welcome back! Is this about order A17?"]
    async with make_env(script, agents=[phone_agent(greeting=GREETING)]) as env:
        assert await env.twilio.text("my order is A17", sender="(415) 555-0100") == [script[0]]
        async with media_call(env.twilio, await dial(env, "415-555-0100")) as phone:
            await eventually(lambda: bool(phone.events("media")))
            await phone.quiet()
        request = env.llm.requests[1].messages
        assert [m.content for m in request if m.role == "user"] == ["my order is A17"]
        assert request[-1].role == "system" and RETURNING_CALLER_NOTE in (request[-1].content or "")
        contents = [content for _, content, _ in await stored(env)]
        assert contents[-1] == script[1] and GREETING not in contents


async def test_a_bad_signature_on_the_upgrade_gets_403_and_no_session(
    make_env: EnvFactory,
) -> None:
    async with make_env(agents=[phone_agent()]) as env:
        twiml = await dial(env)
        url, _ = stream_of(twiml)
        for signature in ("", "bad", env.twilio.sign(url.replace("/media", "/relay"))):
            with pytest.raises(InvalidStatus) as refused:
                async with media_call(env.twilio, twiml, signature=signature):
                    pass
            assert refused.value.response.status_code == 403
        assert env.hub.stats().live_conversations == 0
        assert await env.store.list_conversations() == []


async def test_an_agent_whose_speech_models_are_missing_gets_no_session(
    make_env: EnvFactory,
) -> None:
    agent = phone_agent(tts="piper:/nonexistent/voice.onnx")
    async with make_env(agents=[agent]) as env:
        async with media_call(env.twilio, await dial(env)) as phone:
            await phone.ws.wait_closed()
        assert not phone.received
        assert env.hub.stats().live_conversations == 0
        assert await env.store.list_conversations() == []


async def test_an_sms_during_a_media_call_is_answered_by_sms_only(
    make_env: EnvFactory, stt: STT
) -> None:
    script = [
        FakeReply(text="Our address is 1 Main Street."),  # the SMS
        FakeReply(text="You pressed one."),  # the call's next turn
    ]
    async with make_env(script, agents=[phone_agent()]) as env:
        async with media_call(env.twilio, await dial(env)) as phone:
            await eventually(lambda: env.hub.stats().live_conversations == 1)
            assert await env.twilio.text("what is your address?", agent="phone") == [
                "Our address is 1 Main Street."
            ]
            await phone.quiet()
            assert not phone.events("media")  # the SMS answer was not spoken on the call
            await phone.press("1")
            await eventually(lambda: bool(phone.events("media")))
            await phone.quiet()
            await phone.stop()
            await phone.ws.wait_closed()
        assert "pressed" in words(await transcribe(stt, bytes(phone.heard)))
        call_request = [m.content for m in env.llm.requests[-1].messages]
        assert "what is your address?" in call_request
        assert "Our address is 1 Main Street." in call_request
        await env.idle()
        turns = await env.store.load_turns(await env.conversation_id())
        channels = {t["data"].get("content"): t["data"]["channel"] for t in turns}
        assert channels["what is your address?"] == "sms"
        assert channels["You pressed one."] == "voice"
