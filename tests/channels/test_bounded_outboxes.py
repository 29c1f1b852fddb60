"""Every queue on a live path has a ceiling: a peer that never reads costs bounded memory.

Each channel's outbox is filled by a long reply while nobody drains it, and must stay under its
bound, count what it gave up, keep the control messages its protocol needs, and end the call
with a log line once the peer is hopeless. The playback tracker and the listener's turn buffer
must stay small however long the call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from tests.audio.scripted_vad import RATE, ScriptedVAD, marked_audio, script
from tests.voice.fakes import Call, ScriptedSTT
from voxline import Agent, Session
from voxline.audio.clock import VirtualClock
from voxline.audio.frames import AudioFrame
from voxline.audio.playback import HEARD_CHARS, PlaybackTracker
from voxline.audio.turn_taking import TurnOptions
from voxline.channels import twilio_media, twilio_relay, web
from voxline.channels import web_protocol as web_wire
from voxline.channels.outbox import BoundedOutbox
from voxline.channels.relay_protocol import Prompt
from voxline.channels.twilio_media import MediaCall, MediaStreamTransport
from voxline.channels.twilio_relay import RelayCall
from voxline.channels.web import WebCall
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.providers.tts.base import AudioChunk
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.voice import speaker
from voxline.voice.listener import Listener
from voxline.voice.providers import SpeechProviders

GAVE_UP = "peer stopped reading; ending the call"
WORDS = [f"word{index}" for index in range(2000)]
LONG_REPLY = " ".join(WORDS)  # 2000 tokens from the fake model, all at once
SPOKEN = " ".join(f"Sentence number {index} is here." for index in range(40))


async def started(store: Store, settings: Settings, reply: str, **kwargs: Any) -> Session:
    session = Session(
        Agent(name="tester"),
        llm=FakeLLM([FakeReply(reply)]),
        store=store,
        settings=settings,
        **kwargs,
    )
    await session.start(greet=False)
    return session


class InstantTTS:
    """Speaks each sentence as one chunk of silence (0.05 s a character), at once."""

    label = "instant"
    sample_rate = 8000

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        yield AudioChunk(np.zeros(len(text) * 400, dtype=np.int16), self.sample_rate, text)


def speech() -> SpeechProviders:
    return SpeechProviders(ScriptedSTT(VirtualClock(), []), InstantTTS(), ScriptedVAD([]))


async def never_returns(message: str) -> None:
    """A socket whose peer stopped reading: the first send never completes."""
    await asyncio.Event().wait()


def gave_up(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == GAVE_UP]


# -- the shared policy -----------------------------------------------------------------------


async def test_droppable_items_give_way_oldest_first_and_drops_are_counted_and_logged() -> None:
    with capture_logs() as logs:
        outbox: BoundedOutbox[str] = BoundedOutbox("test", limit=4, reserve=2)
        for index in range(250):
            outbox.offer(f"event {index}")
        assert outbox.items() == [f"event {index}" for index in range(246, 250)]
        assert outbox.dropped == 246 and outbox.peak == 4
        outbox.offer("control", essential=True)  # takes the oldest droppable's place
        assert outbox.items() == ["event 247", "event 248", "event 249", "control"]
    warned = [line for line in logs if line["event"] == "outbox full: message dropped"]
    assert [line["dropped"] for line in warned] == [1, 100, 200]  # once, then every 100th


async def test_an_essential_item_with_no_room_left_ends_the_call() -> None:
    ended: list[str] = []
    with capture_logs() as logs:
        outbox: BoundedOutbox[str] = BoundedOutbox(
            "test", limit=2, reserve=1, on_abandon=ended.append
        )
        assert all(outbox.offer(f"control {index}", essential=True) for index in range(3))
        assert not outbox.offer("one too many", essential=True)
    assert ended and outbox.abandoned and outbox.closed and len(outbox) == 0
    assert await outbox.get() is None
    [line] = gave_up(logs)
    assert line["log_level"] == "error" and line["unsent"] == 3


async def test_a_full_outbox_makes_audio_wait_and_gives_up_on_a_peer_that_never_reads() -> None:
    ended: list[str] = []
    outbox: BoundedOutbox[str] = BoundedOutbox("test", limit=2, stall=0.2, on_abandon=ended.append)
    assert await outbox.push("a") and await outbox.push("b")
    waiting = asyncio.create_task(outbox.push("c"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # backpressure: the producer waits
    assert await outbox.get() == "a"
    assert await waiting  # room was made, so it went in
    with capture_logs() as logs:
        assert not await outbox.push("d")  # nobody reads for `stall`
    assert ended and gave_up(logs)


async def test_audio_waiting_for_room_across_a_clear_is_discarded_with_the_rest() -> None:
    outbox: BoundedOutbox[str] = BoundedOutbox("test", limit=1)
    await outbox.push("old frame")
    waiting = asyncio.create_task(outbox.push("older than the clear"))
    await asyncio.sleep(0)
    outbox.clear()
    outbox.offer("clear", essential=True)
    assert not await waiting
    assert outbox.items() == ["clear"]


# -- Media Streams ---------------------------------------------------------------------------


async def test_media_outbox_stays_bounded_keeps_clear_and_forgets_unechoed_marks() -> None:
    transport = MediaStreamTransport("MZ1")
    bound = transport.outbox.limit + transport.outbox.reserve
    producer = asyncio.create_task(produce_frames(transport, 3000))  # a minute of audio
    await asyncio.sleep(0.05)
    assert not producer.done() and len(transport.outbox) == transport.outbox.limit  # waiting
    transport.clear()  # a barge-in while Twilio is behind: the clear goes out, frames do not
    assert [json.loads(m)["event"] for m in transport.outbox.items()[0]] == ["clear"]
    producer.cancel()
    assert transport.outbox.peak <= bound and transport.outbox.dropped == 0


async def produce_frames(transport: MediaStreamTransport, count: int) -> None:
    for index in range(count):
        pcm = np.zeros(160, dtype=np.int16)
        await transport.send(AudioFrame(pcm, 8000, index * 0.02))


async def test_pending_marks_are_bounded_when_echoes_stop_coming() -> None:
    transport = MediaStreamTransport("MZ1")
    sent: list[str] = []
    all_sent = asyncio.Event()

    async def reads(message: str) -> None:
        sent.append(message)
        if len(sent) == 2 * 3500:
            all_sent.set()

    writer = asyncio.create_task(transport.write(reads))  # Twilio reads, never echoes
    await produce_frames(transport, 3500)  # 70 s of audio
    await asyncio.wait_for(all_sent.wait(), 5)
    writer.cancel()
    assert transport.marks_forgotten.total == 3500 - 3000  # 60 s of marks are remembered
    last = json.loads(sent[-1])["mark"]["name"]
    assert transport.confirmed(last) == pytest.approx(70.0)  # a late echo still confirms


async def test_a_media_call_whose_peer_never_reads_is_ended_with_a_log_line(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(twilio_media, "OUTBOX_SECONDS", 0.2)  # 10 frames
    monkeypatch.setattr(twilio_media, "STALL_SECONDS", 0.3)
    session = await started(store, settings, "", channel="voice")
    with capture_logs() as logs:
        call = MediaCall(session, "MZ1", speech(), call_sid="CA1")
        writer = asyncio.create_task(call.transport.write(never_returns))
        await call.start(SPOKEN, returning=False)  # two minutes of speech
        await asyncio.wait_for(call.over.wait(), 5)  # the server closes the stream on this
        await call.finish()
    writer.cancel()
    outbox = call.transport.outbox
    assert outbox.peak <= outbox.limit + outbox.reserve and outbox.abandoned
    [line] = gave_up(logs)
    assert line["outbox"] == "media stream" and line["call_sid"] == "CA1"
    await session.close()


# -- ConversationRelay -----------------------------------------------------------------------


@pytest.fixture
async def relay(store: Store, settings: Settings) -> AsyncIterator[RelayCall]:
    """A relay call whose model answers with `LONG_REPLY`; nobody reads its outbox."""
    session = await started(store, settings, LONG_REPLY, channel="voice")
    call = RelayCall(session, call_sid="CA1")
    await call.start("none", None)
    yield call
    await call.finish()
    await session.close()


async def test_relay_tokens_merge_when_full_so_nothing_is_lost_and_last_survives(
    relay: RelayCall,
) -> None:
    call = relay
    await call.session.send_text("tell me everything")  # nobody reads the outbox meanwhile
    outbox = call.outbox
    assert outbox.peak <= outbox.limit + outbox.reserve
    assert outbox.coalesced > 0 and outbox.dropped == 0 and not call.over.is_set()
    frames = [json.loads(frame) for frame in outbox.items()]
    assert "".join(frame["token"] for frame in frames) == LONG_REPLY
    assert frames[-1] == {"type": "text", "token": "", "last": True}


async def test_a_relay_peer_that_leaves_no_room_for_control_messages_is_given_up(
    relay: RelayCall,
) -> None:
    call, session = relay, relay.session
    with capture_logs() as logs:
        await session.send_text("tell me everything")
        for _ in range(twilio_relay.OUTBOX_RESERVE):
            call.play("https://example.test/hold.mp3")  # control messages pile up unread
    assert call.over.is_set() and call.outbox.abandoned and len(call.outbox) == 0
    assert gave_up(logs)[0]["outbox"] == "conversation relay"
    turns = len(session.turns)
    call.handle(Prompt(text="hello?", last=True))  # nothing more is answered
    await asyncio.sleep(0.01)
    assert len(session.turns) == turns


# -- the browser -----------------------------------------------------------------------------


async def test_a_browser_that_never_reads_drops_interim_events_keeps_essential_ones_and_ends(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "OUTBOX_LIMIT", 16)
    monkeypatch.setattr(web, "STALL_SECONDS", 0.3)
    session = await started(store, settings, LONG_REPLY, channel="web", auto_deliver=False)
    with capture_logs() as logs:
        call = WebCall(session, speech(), output_rate=8000)
        await call.start(agent="tester", greeting=None)
        await session.send_text("tell me everything")  # 2000 deltas, then speech
        outbox = call.outbox
        events = [json.loads(m) for m in outbox.items() if isinstance(m, str)]
        kept = [m for m in events if m["type"] in web.ESSENTIAL_EVENTS]
        assert [m["type"] for m in kept] == [
            "hello",
            "transcript",  # the caller's words
            "transcript",  # the reply's final text: what the dropped deltas added up to
        ]
        assert kept[2]["text"] == LONG_REPLY and outbox.dropped > 1900
        await asyncio.wait_for(call.over.wait(), 5)  # the audio found no room: call over
        await call.finish()
    assert outbox.peak <= outbox.limit + outbox.reserve and outbox.abandoned
    assert gave_up(logs)[0]["outbox"] == "browser"
    await session.close()


async def test_a_browser_clear_always_gets_through_a_full_outbox() -> None:
    outbox = web.Outbox(limit=4)
    transport = web.WebTransport(outbox, 8000)
    for index in range(4):
        await transport.send(AudioFrame(np.zeros(160, dtype=np.int16), 8000, index * 0.02))
    outbox.event("state", state="speaking")  # no room, nothing droppable queued: dropped
    transport.clear()
    assert outbox.items() == [web_wire.event("clear")] and outbox.dropped == 1


# -- playback tracking and the listener ------------------------------------------------------


def test_the_tracker_forgets_what_was_confirmed_played() -> None:
    tracker = PlaybackTracker()
    for index in range(10_000):  # a very long reply, each chunk confirmed as it plays
        end = tracker.add(f"Sentence number {index} is here.", 1.0)
        assert tracker.spans <= 1
        tracker.advance_to(end - 0.5)
        assert tracker.spans == 1  # the chunk now playing is what a barge-in cuts
        tracker.advance_to(end)
    assert tracker.spans == 0
    heard = tracker.heard_text()
    spoken = " ".join(f"Sentence number {index} is here." for index in range(10_000))
    assert HEARD_CHARS - 20 < len(heard) <= HEARD_CHARS
    assert spoken.endswith(heard) and spoken[-len(heard) - 1] == " "  # cut between words


async def test_the_speaker_holds_a_handful_of_spans_through_a_long_reply(
    store: Store, settings: Settings
) -> None:
    call = Call(store, settings, vad=[(0.0, 0.3)], words=[], replies=[])
    await call.start()
    await call.session.say(SPOKEN)
    tracker = call.pipeline.speaker.tracker
    most = 0
    for _ in range(60):
        await call.run(1.0)
        most = max(most, tracker.spans)
    assert tracker.pending < 1e-9 and tracker.spans == 0 and most <= 2
    await call.close()


async def test_text_far_ahead_of_speech_is_capped_and_the_rest_of_that_turn_not_spoken(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(speaker, "MAX_UNSPOKEN_CHARS", 100)
    call = Call(store, settings, vad=[(0.0, 0.3)], words=[], replies=[])
    await call.start()
    with capture_logs() as logs:
        await call.session.say(SPOKEN)  # 40 sentences at once, far more than 100 characters
        await call.run(10.0)
        await call.close()
    sentences = [f"Sentence number {index} is here." for index in range(40)]
    assert call.tts.texts == sentences[:3]  # what fit; never a later sentence after a gap
    assert call.pipeline.speaker.unspoken_dropped == 37
    assert [line["event"] for line in logs if line["log_level"] == "warning"] == [
        "reply too far ahead of speech: sentences not spoken",
        "speech given up in total",
    ]


async def test_the_listeners_turn_buffer_is_capped() -> None:
    vad = ScriptedVAD(script((0.0, 0.3), (0.9, 3.0)))  # three seconds of speech
    listener = Listener(
        vad,
        ScriptedSTT(VirtualClock(), []),
        input_rate=RATE,
        options=TurnOptions(),
        max_turn_audio=1.0,
    )
    audio = marked_audio(330)
    with capture_logs() as logs:
        for start in range(0, len(audio), 320):
            listener.push(audio[start : start + 320])
    assert listener.user_speaking
    assert len(listener.speech_so_far()) == RATE  # the first second, pre-roll included
    assert listener.dropped_samples > RATE
    assert [line["event"] for line in logs] == ["turn audio over its cap: the rest is not kept"]
