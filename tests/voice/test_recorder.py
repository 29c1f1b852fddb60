"""Call recordings: both sides in one stereo WAV, caller left, agent right, 16 kHz, on one clock;
what a barge-in cleared is not in the file; files land where the agent's pattern says."""

from __future__ import annotations

import wave
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.audio.scripted_vad import RATE, ScriptedVAD, marked_audio, script
from voxline import Agent, Session
from voxline.agents.spec import AgentSpec
from voxline.agents.twilio import TwilioOptions
from voxline.audio.clock import VirtualClock, sleep_until
from voxline.audio.frames import AudioFrame
from voxline.channels.twiml import RelayConnect, relay_twiml
from voxline.providers.llm.fake import FakeReply
from voxline.providers.tts.base import AudioChunk
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.voice import VoicePipeline
from voxline.voice.recorder import (
    CallRecorder,
    RecordingTransport,
    close_recording,
    record_call,
    record_input,
    recording_path,
)

from .fakes import ClockedLLM, ScriptedSTT
from .fakes import RecordingTransport as FakeTransport

FRAME = 320  # 20 ms at 16 kHz
TONE = 3000  # what the agent's fake voice "says", sample after sample


def read(path: Path) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 16000)
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    return data[:, 0], data[:, 1]


def seconds(samples: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """First and last second where `samples` is true."""
    where = np.flatnonzero(samples)
    return where[0] / 16000, (where[-1] + 1) / 16000


async def test_both_sides_are_laid_out_on_one_clock_and_a_clear_takes_back_the_unplayed(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    path = tmp_path / "call.wav"
    recorder = CallRecorder(path, input_rate=RATE, output_rate=RATE, clock=clock)
    caller = np.full(FRAME, 1000, dtype=np.int16)
    agent = np.full(FRAME, -2000, dtype=np.int16)
    sent = 0
    for step in range(200):  # 4 s of caller audio, one frame every 20 ms
        recorder.caller(caller)
        now = step * 0.02
        if 1.0 <= now < 1.5:
            # The agent speaks from 1.0 s with a 100 ms lead: frames go out ahead of playing.
            while sent * 0.02 < now - 1.0 + 0.1:
                recorder.agent(AudioFrame(agent, RATE, sent * 0.02))
                sent += 1
        if step == 75:  # 1.5 s: the caller barges in; what was not played yet is dropped
            recorder.agent_cleared()
        await clock.advance(0.02)
    await recorder.close()

    left, right = read(path)
    assert len(left) == len(right) == pytest.approx(4.0 * 16000, abs=FRAME)
    assert seconds(left == 1000) == pytest.approx((0.0, 4.0), abs=0.021)
    start, end = seconds(right == -2000)
    assert start == pytest.approx(1.0, abs=0.021)
    assert end == pytest.approx(1.5, abs=0.021)  # the 100 ms sent ahead was cleared
    assert not np.any(right[round(1.6 * 16000) :])


async def test_telephone_rates_are_resampled_to_16_khz(tmp_path: Path) -> None:
    clock = VirtualClock()
    path = tmp_path / "phone.wav"
    recorder = CallRecorder(path, input_rate=8000, output_rate=8000, clock=clock)
    tone = (np.sin(np.arange(160) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    for step in range(150):  # 3 s
        recorder.caller(tone)
        if 50 <= step < 100:
            recorder.agent(AudioFrame(tone, 8000, (step - 50) * 0.02))
        await clock.advance(0.02)
    await recorder.close()

    left, right = read(path)
    assert len(left) == pytest.approx(3.0 * 16000, abs=400)
    loud = np.abs(right.astype(np.int32)) > 2000
    start, end = seconds(loud)
    assert start == pytest.approx(1.0, abs=0.05) and end == pytest.approx(2.0, abs=0.05)
    assert np.abs(left[16000:32000].astype(np.int32)).max() > 6000  # the caller throughout


class ToneTTS:
    """Says every character as 50 ms of a constant tone, so the agent's side is audible."""

    label = "tone"
    sample_rate = RATE

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        await sleep_until(self._clock, self._clock.now() + 0.05)
        yield AudioChunk(np.full(round(len(text) * 0.05 * RATE), TONE, np.int16), RATE, text)


def voice_session(store: Store, settings: Settings, clock: VirtualClock) -> Session:
    agent = Agent(name="recorded", recording={"enabled": True})
    llm = ClockedLLM([FakeReply("Sunny today.")], clock)
    return Session(
        agent, llm=llm, store=store, settings=settings, channel="voice", auto_deliver=False
    )


QUESTION = [(0.35, 0.6, "what's"), (0.6, 0.9, "the"), (0.9, 1.25, "weather")]
ASKING: Sequence[tuple[float, float]] = [(0.0, 0.3), (0.9, 1.0)]


async def run_call(pipeline: VoicePipeline, clock: VirtualClock, *, hook: bool) -> None:
    audio = marked_audio(800)
    for step in range(300):  # 6 s of caller audio
        pcm = audio[step * FRAME : (step + 1) * FRAME]
        if hook:  # what the pipeline's push_audio hook does
            record_input(pipeline.transport, pcm)
        pipeline.push_audio(pcm)
        await clock.advance(0.02)


async def test_a_pipeline_call_is_recorded_through_the_transport_wrapper(
    store: Store, settings: Settings
) -> None:
    clock = VirtualClock()
    session = voice_session(store, settings, clock)
    wrapped = record_call(session, FakeTransport(clock), clock)
    assert isinstance(wrapped, RecordingTransport)
    pipeline = VoicePipeline(
        session,
        wrapped,
        stt=ScriptedSTT(clock, QUESTION),
        tts=ToneTTS(clock),
        vad=ScriptedVAD(script(*ASKING)),
        clock=clock,
    )
    await session.start(greet=False)
    await run_call(pipeline, clock, hook=True)
    await close_recording(wrapped)
    await pipeline.close()
    await session.close()

    path = wrapped.recorder.path
    assert path.parent.parent == settings.data_dir.resolve() / "recordings" / "recorded"
    assert path.name == f"{session.id}-{session.connection_id}.wav"
    left, right = read(path)
    assert len(left) == pytest.approx(6.0 * 16000, abs=FRAME)
    speaking = seconds(right == TONE)
    assert speaking[0] > 1.3  # after the question ended (1.3 s) and the end-of-turn silence
    assert speaking[1] - speaking[0] == pytest.approx(len("Sunny today.") * 0.05, abs=0.03)
    assert np.any(left[round(0.5 * 16000) : round(1.2 * 16000)])  # the caller's question


async def test_the_pipeline_records_an_agent_that_asks_for_it(
    store: Store, settings: Settings
) -> None:
    clock = VirtualClock()
    session = voice_session(store, settings, clock)
    pipeline = VoicePipeline(
        session,
        FakeTransport(clock),
        stt=ScriptedSTT(clock, QUESTION),
        tts=ToneTTS(clock),
        vad=ScriptedVAD(script(*ASKING)),
        clock=clock,
    )
    await session.start(greet=False)
    await run_call(pipeline, clock, hook=False)
    await pipeline.close()
    await session.close()
    [path] = (settings.data_dir / "recordings").rglob("*.wav")
    left, right = read(path)
    assert np.any(right == TONE) and np.any(left)


async def test_recording_is_off_unless_the_agent_asks(store: Store, settings: Settings) -> None:
    session = Session(Agent(name="quiet"), store=store, settings=settings)
    transport = FakeTransport(VirtualClock())
    assert record_call(session, transport) is transport


def test_paths_follow_the_pattern_and_stay_inside(settings: Settings) -> None:
    agent = Agent(name="support", recording={"path": "{date}/{agent}_{connection}.wav"})
    session = Session(
        agent, settings=settings, conversation_id="conv/../../x", connection_id="CA 1/2"
    )
    path = recording_path(session, at=0.0)
    assert path == settings.data_dir.resolve() / "recordings" / "1970-01-01" / "support_CA_1_2.wav"
    path.parent.mkdir(parents=True)
    path.touch()
    assert recording_path(session, at=0.0).name == "support_CA_1_2-2.wav"
    hostile = Agent(name="support", recording={"path": "{conversation}.wav"})
    inside = recording_path(
        Session(hostile, settings=settings, conversation_id="../../etc/passwd"), at=0.0
    )
    assert inside.parent == settings.data_dir.resolve() / "recordings"


def test_conversation_relay_calls_ask_twilio_to_record() -> None:
    connect = RelayConnect("wss://v.example/relay", "https://v.example/action")
    plain = ET.fromstring(relay_twiml(AgentSpec(name="a"), TwilioOptions(), connect))
    assert [child.tag for child in plain] == ["Connect"]

    recorded = AgentSpec(name="a", recording={"enabled": True})
    called_back = RelayConnect(
        "wss://v.example/relay",
        "https://v.example/action",
        recording_status_url="https://v.example/recorded",
    )
    root = ET.fromstring(relay_twiml(recorded, TwilioOptions(), called_back))
    assert [child.tag for child in root] == ["Start", "Connect"]  # recording starts first
    [recording] = root.find("Start") or []
    assert recording.tag == "Recording"
    assert recording.attrib == {
        "channels": "dual",
        "track": "both",
        "recordingStatusCallback": "https://v.example/recorded",
        "recordingStatusCallbackMethod": "POST",
    }

    not_twilio = AgentSpec(name="a", recording={"enabled": True, "twilio_relay": False})
    root = ET.fromstring(relay_twiml(not_twilio, TwilioOptions(), connect))
    assert [child.tag for child in root] == ["Connect"]
