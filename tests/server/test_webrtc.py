"""The browser channel's WebRTC door, with a Python aiortc peer in the browser's place: offer and
answer over HTTP, the caller's voice as Opus on a track, the agent's voice back on the server's
track, the page's JSON events on the data channel, barge-in, hang-up and refusals.

Opus changes every sample, so the speech stand-ins here key on loudness, not exact values: any
loud audio is speech, every spoken turn is heard as `HEARD`, and the agent speaks a sine tone
(Opus keeps a tone; a constant level would come out as silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import websockets

pytest.importorskip(
    "aiortc", reason="the webrtc extra is not installed: pip install -e '.[webrtc]'"
)

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from tests.server.browser import browser_call
from tests.server.conftest import API_KEY, EnvFactory
from tests.server.twilio_emulator import eventually
from voxline import Agent
from voxline.agents.spec import AgentSpec
from voxline.audio.frames import AudioFrame
from voxline.channels.webrtc import OPUS_RATE, BotAudioTrack
from voxline.providers.llm.fake import FakeReply, FakeToolCall
from voxline.providers.stt.base import Transcript
from voxline.providers.tts.base import AudioChunk
from voxline.voice.providers import SpeechProviders

RATE = 16000
HEARD = "what's the weather"
REPLY = "Sunny all day."
LONG_REPLY = " ".join(["The forecast says sunshine all morning and a breeze after lunch."] * 4)
LOUD = 1500.0  # RMS above which a received frame is the agent's voice (the tone is ~5600)
WAIT = 20.0


class LevelVAD:
    label = "level"
    sample_rate = RATE
    chunk_samples = 160

    def stream(self) -> LevelVAD:
        return self

    def process(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> float:
        scale = 1.0 if chunk.dtype == np.float32 else 32768.0
        peak = float(np.abs(chunk.astype(np.float32)).max()) / scale if len(chunk) else 0.0
        return 1.0 if peak > 0.05 else 0.0

    def reset(self) -> None:
        return None


class OneQuestionSTT:
    label = "one question"
    sample_rate = RATE

    async def transcribe(
        self, pcm: npt.NDArray[np.int16], *, language: str | None = None
    ) -> Transcript:
        return Transcript(HEARD, audio_duration=len(pcm) / RATE)


class SineTTS:
    """Speaks a 440 Hz tone, 30 ms per character."""

    label = "sine"
    sample_rate = RATE

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        t = np.arange(round(len(text) * 0.03 * RATE)) / RATE
        yield AudioChunk((np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16), RATE, text)


@pytest.fixture(autouse=True)
def speech(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    async def load(spec: AgentSpec, **_: Any) -> SpeechProviders:
        return SpeechProviders(OneQuestionSTT(), SineTTS(), LevelVAD())

    monkeypatch.setattr("voxline.server.speech_pool.load_speech_providers", load)
    yield


def helper() -> Agent:
    return Agent(
        name="helper",
        instructions="You help in the browser.",
        turn={"min_interruption_duration": 0.3},
    )


def tone(seconds: float, frequency: float = 300.0) -> AudioFrame:
    t = np.arange(round(seconds * OPUS_RATE)) / OPUS_RATE
    pcm = (np.sin(2 * math.pi * frequency * t) * 9000).astype(np.int16)
    return AudioFrame(pcm, OPUS_RATE)


@dataclass
class Peer:
    """The browser's side: a microphone track (the server's own paced track class, fed with
    tones), the agent's voice as received, and the data channel's events."""

    pc: RTCPeerConnection
    mic: BotAudioTrack
    channel: RTCDataChannel
    answer: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    heard: list[tuple[float, float]] = field(default_factory=list)  # (time, RMS) per frame
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    def type(self, text: str) -> None:
        self.channel.send(json.dumps({"type": "text", "text": text}))

    async def say(self, seconds: float) -> None:
        await self.mic.put(tone(seconds))

    async def event(self, kind: str, **match: Any) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                for event in self.events:
                    if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                        return event
                self.arrived.clear()
                await self.arrived.wait()

    def loud_since(self, since: float) -> int:
        return sum(1 for at, rms in self.heard if at >= since and rms > LOUD)

    async def read(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            samples = frame.to_ndarray().astype(np.float32)  # type: ignore[union-attr]
            self.heard.append((loop.time(), float(np.sqrt(np.mean(samples**2)))))


def without_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """An offer as a trickling browser sends it (no candidates yet), and its candidates as the
    browser's `RTCIceCandidate.toJSON()` gives them, to send after it."""
    kept, found, index, mid = [], [], -1, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            index, mid = index + 1, None
        elif line.startswith("a=mid:"):
            mid = line.removeprefix("a=mid:")
        if line.startswith("a=candidate:"):
            found.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index})
        elif line != "a=end-of-candidates":
            kept.append(line)
    return "\r\n".join(kept) + "\r\n", found


@contextlib.asynccontextmanager
async def peer(base: str, *, trickle: bool = False, **offer: Any) -> AsyncIterator[Peer]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = BotAudioTrack()
    channel = pc.createDataChannel("voxline")
    pc.addTransceiver(mic, direction="sendrecv")
    answered: Peer | None = None

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        assert answered is not None
        answered.reader = asyncio.ensure_future(answered.read(track))

    await pc.setLocalDescription(await pc.createOffer())
    sdp, candidates = without_candidates(pc.localDescription.sdp)
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/web/rtc/offer",
            json={"type": "offer", "sdp": sdp if trickle else pc.localDescription.sdp, **offer},
        )
        assert response.status_code == 200, response.text
        answered = Peer(pc, mic, channel, response.json())
        if trickle:  # the candidates follow the offer, then their end
            assert candidates
            for candidate in [*candidates, {"candidate": None}]:
                url = f"/web/rtc/{answered.answer['call_id']}/candidate"
                sent = await http.post(url, json=candidate)
                assert sent.status_code == 204, sent.text

    @channel.on("message")
    def on_message(message: str) -> None:
        answered.events.append({**json.loads(message), "_at": asyncio.get_running_loop().time()})
        answered.arrived.set()

    await pc.setRemoteDescription(
        RTCSessionDescription(**{k: answered.answer[k] for k in ("sdp", "type")})
    )
    try:
        yield answered
    finally:
        mic.stop()
        await pc.close()
        if answered.reader is not None:
            answered.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answered.reader


async def test_a_spoken_question_is_answered_on_the_track_with_events_on_the_data_channel(
    make_env: EnvFactory,
) -> None:
    async with make_env([FakeReply(REPLY)], agents=[helper()]) as env:
        async with peer(env.twilio.base) as browser:
            hello = await browser.event("hello")
            assert hello["input_rate"] == OPUS_RATE and hello["agent"] == "helper"
            loop = asyncio.get_running_loop()
            asked = loop.time()
            await browser.say(1.0)
            user = await browser.event("transcript", role="user")
            assert user["text"] == HEARD
            bot = await browser.event("transcript", role="bot")
            assert bot["text"] == REPLY and not bot["interrupted"]
            metrics = await browser.event("metrics")
            assert metrics["turn_id"] and metrics["voice_to_voice_ms"] > 0
            await eventually(lambda: browser.loud_since(asked + 1.0) >= 10)  # the tone came back
            kinds = [event["type"] for event in browser.events]
            # The pause transcript reached the page before the turn's final transcript.
            assert "interim" in kinds
            assert kinds.index("interim") < kinds.index("transcript")
            assert next(e for e in browser.events if e["type"] == "interim")["text"] == HEARD
            # The page hangs up: the call ends on the server and its peer connection closes.
            async with httpx.AsyncClient(base_url=env.twilio.base) as http:
                gone = await http.delete(f"/web/rtc/{browser.answer['call_id']}")
            assert gone.status_code == 204
            await eventually(lambda: len(env.hub.calls) == 0)
            await eventually(lambda: browser.pc.connectionState == "closed")
        await env.idle()
        turns = await env.store.load_turns(hello["conversation_id"])
        spoken = [t["data"] for t in turns if t["kind"] in ("user_text", "bot_text")]
        assert [d.get("content", d.get("text")) for d in spoken] == [HEARD, REPLY], spoken


async def test_the_debug_feed_follows_a_webrtc_call_as_it_does_a_socket_call(
    make_env: EnvFactory,
) -> None:
    async with (
        make_env([FakeReply(REPLY)], agents=[helper()]) as env,
        peer(env.twilio.base) as browser,
    ):
        conversation = (await browser.event("hello"))["conversation_id"]
        feed_url = env.twilio.base.replace("http", "ws", 1) + f"/api/calls/{conversation}/feed"
        keyed = {"Authorization": f"Bearer {API_KEY}"}
        async with websockets.connect(feed_url, additional_headers=keyed) as feed:
            assert json.loads(await feed.recv())["type"] == "feed_ready"
            await browser.say(1.0)
            await browser.event("transcript", role="bot")
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(WAIT):
                while not any(e["type"] == "reply_finished" for e in seen):
                    seen.append(json.loads(await feed.recv()))
            spoken = [e["text"] for e in seen if e["type"] == "user_utterance" and e["final"]]
            assert spoken == [HEARD]
            assert any(e["type"] == "state" and e["to"] == "speaking" for e in seen)
            await browser.pc.close()  # the page goes away
            async with asyncio.timeout(WAIT):
                while (event := json.loads(await feed.recv()))["type"] != "call_ended":
                    pass
            assert event["turns"] == 2


async def test_the_socket_gets_the_same_interim_words_before_the_turns_transcript(
    make_env: EnvFactory,
) -> None:
    """The `interim` event is the call's, not WebRTC's: the socket door sends it too."""
    t = np.arange(round(0.6 * RATE)) / RATE
    question = (np.sin(2 * math.pi * 300 * t) * 9000).astype(np.int16)
    silence = np.zeros(RATE, dtype=np.int16)
    async with make_env([FakeReply(REPLY)], agents=[helper()]) as env:
        async with browser_call(env.twilio.base) as call:
            await call.event("hello")
            await call.speak(np.concatenate([question, silence]), pace=0.02)
            await call.event("transcript", role="bot")
        kinds = [e["type"] for e in call.events]
        assert "interim" in kinds and kinds.index("interim") < kinds.index("transcript")
        assert call.of("interim")[0]["text"] == HEARD


async def test_barge_in_clears_the_agents_audio_at_once(make_env: EnvFactory) -> None:
    script = [FakeReply(LONG_REPLY), FakeReply(REPLY)]
    async with make_env(script, agents=[helper()]) as env, peer(env.twilio.base) as browser:
        await browser.event("hello")
        await browser.say(1.0)
        await browser.event("transcript", role="user")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await eventually(lambda: browser.loud_since(started) >= 25)  # half a second of it
        await browser.say(1.0)  # the caller cuts in
        cleared = (await browser.event("clear"))["_at"]
        cut = await browser.event("transcript", role="bot", interrupted=True)
        assert len(cut.get("full_text", "")) > len(cut["text"])  # the unheard rest is known
        await asyncio.sleep(max(0.0, cleared + 1.0 - loop.time()))
        # The long reply had seconds left; after the clear, at most what the jitter buffer
        # held (and not the rest of the reply) arrived before the next answer.
        window = [rms for at, rms in browser.heard if cleared + 0.3 <= at < cleared + 1.0]
        assert window and max(window) < LOUD
        await browser.event("transcript", role="bot", text=REPLY)


async def test_the_agent_ends_the_call_after_its_goodbye_and_the_server_closes_the_peer(
    make_env: EnvFactory,
) -> None:
    end_call = FakeToolCall("end_call", {"reason": "the user is done"})
    script = [FakeReply(text="Goodbye then.", tool_calls=[end_call]), "Take care."]
    async with make_env(script, agents=[helper()]) as env, peer(env.twilio.base) as browser:
        await browser.event("hello")
        browser.type("that is all, thanks")
        end = await browser.event("end")
        assert end["reason"] == "the user is done"
        await eventually(lambda: browser.pc.connectionState == "closed")
        assert browser.events[-1] is end  # nothing follows it
        bot = [
            e["text"] for e in browser.events if e["type"] == "transcript" and e["role"] == "bot"
        ]
        assert bot == ["Goodbye then.", "Take care."]
        assert browser.loud_since(0.0) >= round(len("Goodbye then.Take care.") * 0.03 / 0.02) - 5
        await eventually(lambda: len(env.hub.calls) == 0)


async def test_trickled_candidates_connect_a_call_whose_offer_had_none(
    make_env: EnvFactory,
) -> None:
    """(The server would also learn the browser's address from its connectivity checks, as a
    peer-reflexive candidate: this checks that trickled candidates are taken, not needed.)"""
    async with (
        make_env([], agents=[helper()]) as env,
        peer(env.twilio.base, trickle=True) as browser,
    ):
        await browser.event("hello")
        call = f"/web/rtc/{browser.answer['call_id']}/candidate"
        async with httpx.AsyncClient(base_url=env.twilio.base) as http:
            bad = await http.post(call, json={"candidate": "candidate:nonsense", "sdpMid": "0"})
            assert bad.status_code == 400 and "could not be read" in bad.json()["error"]
            nowhere = await http.post(call, json={"candidate": "candidate:1 1 udp 1 h 1 typ host"})
            assert nowhere.status_code == 400 and "sdpMid" in nowhere.json()["error"]
            unknown = await http.post("/web/rtc/nope/candidate", json={"candidate": None})
            assert unknown.status_code == 404


async def test_the_page_closing_its_peer_connection_ends_the_call(make_env: EnvFactory) -> None:
    async with make_env([], agents=[helper()]) as env:
        async with peer(env.twilio.base) as browser:
            await browser.event("hello")
            assert len(env.hub.calls) == 1
        await eventually(lambda: len(env.hub.calls) == 0)
        await eventually(lambda: env.hub.stats().active_calls == 0)


async def test_bad_offers_get_a_clear_error(make_env: EnvFactory) -> None:
    async with make_env([], agents=[helper()]) as env:
        async with httpx.AsyncClient(base_url=env.twilio.base) as http:
            for sdp in ("m=audio x UDP/TLS/RTP/SAVPF 111\r\n", "v=0\r\nm=audio 9 RTP/AVP 0\r\n"):
                garbage = await http.post("/web/rtc/offer", json={"type": "offer", "sdp": sdp})
                assert garbage.status_code == 400
                assert "SDP could not be read" in garbage.json()["error"]
            empty = await http.post("/web/rtc/offer", json={"type": "offer", "sdp": "v=0\r\n"})
            assert empty.status_code == 400 and "no audio section" in empty.json()["error"]
            not_json = await http.post("/web/rtc/offer", content=b"{")
            assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
            answer = await http.post("/web/rtc/offer", json={"type": "answer", "sdp": "v=0"})
            assert answer.status_code == 400 and "offer" in answer.json()["error"]

            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("audio", direction="sendrecv")  # no data channel
            await pc.setLocalDescription(await pc.createOffer())
            no_channel = await http.post(
                "/web/rtc/offer", json={"type": "offer", "sdp": pc.localDescription.sdp}
            )
            await pc.close()
            assert no_channel.status_code == 400 and "data channel" in no_channel.json()["error"]

            foreign = await http.post(
                "/web/rtc/offer",
                json={"type": "offer", "sdp": "v=0"},
                headers={"Origin": "https://elsewhere.example"},
            )
            assert foreign.status_code == 403
            unknown = await http.post(
                "/web/rtc/offer", json={"type": "offer", "sdp": "v=0", "agent": "nobody"}
            )
            assert unknown.status_code == 403 and "nobody" in unknown.json()["error"]
            assert (await http.delete("/web/rtc/not-a-call")).status_code == 404
        assert len(env.hub.calls) == 0 and env.hub.stats().active_calls == 0


async def test_a_remote_client_needs_a_credential_and_has_a_call_limit(
    make_env: EnvFactory,
) -> None:
    remote = {"X-Forwarded-For": "203.0.113.7"}
    async with make_env([], agents=[helper()], web_max_calls_per_client=1) as env:
        async with httpx.AsyncClient(base_url=env.twilio.base) as http:
            refused = await http.post(
                "/web/rtc/offer", json={"type": "offer", "sdp": "v=0"}, headers=remote
            )
            assert refused.status_code == 403 and "session token" in refused.json()["error"]
        async with peer(env.twilio.base) as browser:
            await browser.event("hello")
            async with httpx.AsyncClient(base_url=env.twilio.base) as http:
                second = await http.post("/web/rtc/offer", json={"type": "offer", "sdp": "v=0"})
            assert second.status_code == 429 and "already has 1" in second.json()["error"]


# -- the server's track on its own ----------------------------------------------------------


async def test_the_track_sends_whole_frames_reports_them_played_and_fills_gaps_with_silence() -> (
    None
):
    played: list[float] = []
    track = BotAudioTrack(played.append)
    await track.put(AudioFrame(np.full(960 + 480, 1000, dtype=np.int16), OPUS_RATE, 1.0))
    first, second, third = [await track.recv() for _ in range(3)]
    assert [f.samples for f in (first, second, third)] == [960, 960, 960]
    assert [f.pts for f in (first, second, third)] == [0, 960, 1920]  # one clock, no gaps
    assert first.sample_rate == OPUS_RATE and first.layout.name == "mono"
    pcm = second.to_ndarray().reshape(-1)
    assert (pcm[:480] == 1000).all() and (pcm[480:] == 0).all()  # the short rest is padded
    assert not third.to_ndarray().any()  # nothing queued: silence
    assert played == [pytest.approx(1.02), pytest.approx(1.03)]  # the frame's end, not padding
    assert track.sent_frames == 2
    track.stop()


async def test_clear_drops_every_queued_frame_at_once() -> None:
    played: list[float] = []
    track = BotAudioTrack(played.append)
    await track.put(AudioFrame(np.full(960 * 10, 1000, dtype=np.int16), OPUS_RATE))
    assert track.queued == 10
    assert track.clear() == 10
    frame = await track.recv()
    assert not frame.to_ndarray().any() and played == []
    assert track.cleared_frames == 10 and track.sent_frames == 0
    track.stop()


async def test_a_track_nobody_reads_drops_frames_and_counts_them_rather_than_block() -> None:
    track = BotAudioTrack(limit=2, stall=0.05)
    await track.put(AudioFrame(np.ones(960 * 3, dtype=np.int16), OPUS_RATE))
    assert track.queued == 2 and track.dropped_frames == 1
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_the_page_is_sent_to_the_socket_where_webrtc_cannot_serve(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Realtime agent speaks over the socket only (409), a server with no address to offer
    says so (503), and so does one without the `webrtc` extra (501): the answers carry
    `fallback: ws`, which the page acts on."""
    realtime = Agent(
        name="voice", instructions="Speak.", llm="openai-realtime:ws://127.0.0.1:9#gpt-realtime"
    )
    offer = {"type": "offer", "sdp": "v=0\r\n", "agent": "voice"}
    async with (
        make_env([], agents=[helper(), realtime], web_max_calls_per_client=1) as env,
        httpx.AsyncClient(base_url=env.twilio.base) as http,
    ):
        for _ in range(2):  # the first one's slot was given back
            refused = await http.post("/web/rtc/offer", json=offer)
            assert refused.status_code == 409 and refused.json()["fallback"] == "ws"
            assert "WebSocket" in refused.json()["error"]
    # A machine with only a loopback interface: aiortc gathers no candidate at all.
    monkeypatch.setattr("aioice.ice.get_host_addresses", lambda use_ipv4, use_ipv6: [])
    async with (
        make_env([], agents=[helper()], web_max_calls_per_client=1) as env,
        httpx.AsyncClient(base_url=env.twilio.base) as http,
    ):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.createDataChannel("voxline")
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        for _ in range(2):  # and its slot is given back
            no_path = await http.post(
                "/web/rtc/offer", json={"type": "offer", "sdp": pc.localDescription.sdp}
            )
            assert no_path.status_code == 503 and no_path.json()["fallback"] == "ws"
        await pc.close()
        assert len(env.hub.calls) == 0
    monkeypatch.setitem(sys.modules, "voxline.server.webrtc_routes", None)  # no aiortc
    async with (
        make_env([], agents=[helper()]) as env,
        httpx.AsyncClient(base_url=env.twilio.base) as http,
    ):
        missing = await http.post("/web/rtc/offer", json={"type": "offer", "sdp": "v=0\r\n"})
        assert missing.status_code == 501 and missing.json()["fallback"] == "ws"
        assert "voxline[webrtc]" in missing.json()["error"]


async def test_peer_connections_at_once_are_capped_for_the_whole_server(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("voxline.server.webrtc_routes.MAX_PEERS", 1)
    other = {"X-Forwarded-For": "203.0.113.9", "Authorization": f"Bearer {API_KEY}"}
    async with make_env([], agents=[helper()]) as env, peer(env.twilio.base) as browser:
        await browser.event("hello")
        async with httpx.AsyncClient(base_url=env.twilio.base) as http:
            full = await http.post(
                "/web/rtc/offer", json={"type": "offer", "sdp": "v=0\r\n"}, headers=other
            )
        assert full.status_code == 429 and "no room" in full.json()["error"]
