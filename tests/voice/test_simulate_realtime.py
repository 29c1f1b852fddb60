"""`voxline simulate` with an agent whose `llm` is a Realtime model: the loopback fake Realtime
server hears the recording and speaks, and the agent's side of the call comes back on the
call's timeline (24 kHz), cut where the caller barged in. No speech model is involved.

The same line runs `voxline talk`: a stand-in sound card (a microphone and a speaker driven by
PortAudio-like callbacks on a thread of their own) checks that branch without a device.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.providers.realtime_server import FakeRealtimeServer, Reply
from voxline import Agent
from voxline.agents.spec import AgentSpec
from voxline.audio import AudioFrame, read_wav, write_wav
from voxline.channels.local_audio import run_talk
from voxline.providers.llm.base import ConfigurationError
from voxline.settings import Settings
from voxline.simulate import PlayoutPort, simulate_call

ROOT = Path(__file__).resolve().parents[2]
RATE = 24000
CALLER_RATE = 16000
VOICE = 3000  # the fake model's voice
MS_PER_CHAR = 20
GREETING = "Hello, this is the shop."
ANSWER = "It will be sunny all day."
LONG = "Returns are free for thirty days, and we refund the card you paid with at once."
SORRY = "Sorry, go ahead."


def spoken(text: str) -> bytes:
    """The fake model saying `text`: PCM16 at 24 kHz, 20 ms a character."""
    return np.full(len(text) * MS_PER_CHAR * RATE // 1000, VOICE, dtype="<i2").tobytes()


def say(text: str, user: str = "") -> Reply:
    return Reply(text, spoken(text), chunk=4800, delay=0.02, user=user)


def recording(*parts: tuple[int, float]) -> AudioFrame:
    """The caller: (amplitude, seconds) runs at 16 kHz (0: silence)."""
    pcm = np.concatenate([np.full(round(s * CALLER_RATE), a, dtype=np.int16) for a, s in parts])
    return AudioFrame(pcm, CALLER_RATE)


def agent(url: str, **fields: Any) -> Agent:
    return Agent(
        name="tester",
        instructions="You answer briefly.",
        greeting=GREETING,
        llm=f"openai-realtime:{url}#gpt-realtime",
        **fields,
    )


def runs(pcm: npt.NDArray[np.int16], level: int) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch of `level` in 24 kHz audio. Gaps under 0.1 s are
    joined: on a loaded machine playback can fall a frame or two behind and leave a hole in
    the call's recording, which is one stretch of speech all the same."""
    on = np.abs(pcm.astype(np.int32) - level) < 200
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
    spans = zip(edges[::2], edges[1::2], strict=True)
    found: list[tuple[float, float]] = []
    for a, b in spans:
        if b - a <= RATE // 50:  # resampler ripple
            continue
        if found and a / RATE - found[-1][1] < 0.1:
            found[-1] = (found[-1][0], b / RATE)
        else:
            found.append((a / RATE, b / RATE))
    return found


@pytest.fixture(autouse=True)
def no_speech_models(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(spec: AgentSpec, *, vad: str = "local", **_: object) -> Any:
        raise AssertionError("a Realtime agent loaded speech models")

    monkeypatch.setattr("voxline.voice.providers.load_speech_providers", refuse)


async def test_simulate_plays_the_model_on_the_call_timeline(tmp_path: Path) -> None:
    script = [say(GREETING), say(ANSWER, user="What's the weather?")]
    caller = recording((0, 1.5), (5000, 0.6), (0, 1.0))
    async with FakeRealtimeServer(script) as model:
        result = await simulate_call(
            caller,
            agent(model.ws_url),
            None,
            settings=Settings(data_dir=tmp_path, llm="fake"),
            greet=True,
        )
        [conn] = model.connections
    assert result.transcript == [
        ("agent", GREETING),
        ("caller", "What's the weather?"),
        ("agent", ANSWER),
    ]
    assert result.sample_rate == RATE
    # The recording reached the model at 24 kHz, on time.
    heard = np.frombuffer(bytes(conn.audio), dtype="<i2")
    [(start, end)] = runs(heard, 5000)
    assert abs(start - 1.5) < 0.05 and abs(end - start - 0.6) < 0.05
    # The agent's side: the greeting at once, the answer after the caller's end of turn.
    greeting, answer = runs(result.audio, VOICE)
    assert greeting[0] < 0.2 and abs(greeting[1] - greeting[0] - 0.48) < 0.03
    assert 2.1 + 0.5 <= answer[0] < 2.1 + 1.0  # the server's silence wait, then the answer
    assert abs(answer[1] - answer[0] - len(ANSWER) * MS_PER_CHAR / 1000) < 0.03
    assert len(result.audio) / RATE >= caller.duration
    [turn] = result.latencies
    assert turn.complete and turn.voice_to_voice is not None


async def test_a_barge_in_cuts_the_model_where_the_caller_stopped_hearing(tmp_path: Path) -> None:
    script = [say(LONG, user="How do returns work?"), say(SORRY, user="Wait.")]
    caller = recording((0, 0.3), (5000, 0.5), (0, 1.7), (7000, 0.5), (0, 1.0))
    async with FakeRealtimeServer(script) as model:
        result = await simulate_call(
            caller, agent(model.ws_url), None, settings=Settings(data_dir=tmp_path, llm="fake")
        )
        [conn] = model.connections
    cut, sorry = runs(result.audio, VOICE)
    interrupted, answer = [text for who, text in result.transcript if who == "agent"]
    assert answer == SORRY
    assert interrupted.endswith("[interrupted]")
    # Cut when the caller spoke (2.5 s in), told to the model as what had played.
    assert 2.5 <= cut[1] <= 2.6
    [truncation] = conn.truncations
    assert abs(truncation["audio_end_ms"] - (cut[1] - cut[0]) * 1000) <= 20
    heard = interrupted.removesuffix(" [interrupted]")
    assert LONG.startswith(heard) and abs(len(heard) * MS_PER_CHAR - (cut[1] - cut[0]) * 1000) < 300
    assert abs(sorry[1] - sorry[0] - len(SORRY) * MS_PER_CHAR / 1000) < 0.03


async def test_fast_is_refused_for_a_realtime_agent(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="real time"):
        await simulate_call(
            recording((0, 0.1)),
            agent("ws://127.0.0.1:9/v1"),
            None,
            settings=Settings(data_dir=tmp_path, llm="fake"),
            fast=True,
        )


async def test_the_simulate_command_writes_the_models_audio(tmp_path: Path) -> None:
    script = [say(ANSWER, user="What's the weather?")]
    caller = recording((0, 0.3), (5000, 0.6), (0, 1.5))
    write_wav(tmp_path / "caller.wav", caller.pcm, caller.sample_rate)
    async with FakeRealtimeServer(script) as model:
        (tmp_path / "agent.json").write_text(
            json.dumps({"name": "tester", "llm": f"openai-realtime:{model.ws_url}#gpt-realtime"})
        )
        command = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "voxline.cli", "simulate", str(tmp_path / "caller.wav")),
            *("--out", str(tmp_path / "agent.wav"), "--agent", str(tmp_path / "agent.json")),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"VOXLINE_DATA_DIR": str(tmp_path), "PATH": ""},
        )
        out, err = await asyncio.wait_for(command.communicate(), 60)
    assert command.returncode == 0, err.decode()
    assert f"agent: {ANSWER}" in out.decode()
    written = read_wav(tmp_path / "agent.wav")
    assert written.sample_rate == RATE
    [(start, end)] = runs(written.pcm, VOICE)
    assert abs(end - start - len(ANSWER) * MS_PER_CHAR / 1000) < 0.03


# -- `voxline talk` on a stand-in sound card --------------------------------------------------
class SoundCard:
    """What `run_talk` needs of `LocalAudioTransport`, with PortAudio's threads played by one
    thread that, every 20 ms, hands the microphone's next block to the event loop and fills a
    speaker block from the player (as the real callbacks do)."""

    def __init__(self, microphone: npt.NDArray[np.int16], rate: int = 48000) -> None:
        self.input_rate = self.output_rate = rate
        self.half_duplex = False
        self.microphone = microphone
        self.played: list[npt.NDArray[np.int16]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, sink: Callable[[npt.NDArray[np.int16]], None], player: Any = None) -> None:
        loop = asyncio.get_running_loop()
        block = self.input_rate // 50

        def run() -> None:
            offset = 0
            while not self._stop.wait(0.02):
                mic = self.microphone[offset : offset + block]
                offset += block
                pcm = mic if len(mic) == block else np.zeros(block, dtype=np.int16)
                loop.call_soon_threadsafe(sink, pcm)
                self.played.append(player.take(block))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


async def test_talk_runs_a_realtime_agent_on_the_sound_card(tmp_path: Path) -> None:
    script = [say(GREETING), say(ANSWER, user="What's the weather?")]
    mic = np.concatenate([np.zeros(48000), np.full(28800, 5000), np.zeros(96000)]).astype(np.int16)
    card = SoundCard(mic)
    lines: list[str] = []
    answered = asyncio.Event()

    class Out:
        def write(self, text: str) -> int:
            lines.append(text)
            if ANSWER in text:
                answered.set()
            return len(text)

    async with FakeRealtimeServer(script) as model:
        talk = asyncio.create_task(
            run_talk(
                agent(model.ws_url),
                Settings(data_dir=tmp_path, llm="fake"),
                out=Out(),  # type: ignore[arg-type]
                transport=card,  # type: ignore[arg-type]
            )
        )
        async with asyncio.timeout(10):
            await answered.wait()
            await asyncio.sleep(len(ANSWER) * MS_PER_CHAR / 1000 + 0.2)
        talk.cancel()
        with pytest.raises(asyncio.CancelledError):
            await talk
    text = "".join(lines)
    assert f"agent> {GREETING}" in text and "you> What's the weather?" in text
    assert f"agent> {ANSWER}" in text
    speaker = np.concatenate(card.played)
    loud = np.abs(speaker.astype(np.int32) - VOICE) < 200
    spoken_ms = np.count_nonzero(loud) * 1000 / 48000
    assert abs(spoken_ms - len(GREETING + ANSWER) * MS_PER_CHAR) < 80


def test_the_playout_port_counts_what_was_taken_per_item() -> None:
    idle: list[bool] = []
    port = PlayoutPort(RATE, on_idle=lambda: idle.append(True))
    port.play("a", spoken("ab"))  # 40 ms
    port.play("b", spoken("c"))  # 20 ms
    assert port.playing
    assert np.all(port.take(RATE // 50 * 3 // 2) == VOICE)  # 30 ms: all of "a"'s first 30
    assert port.played_bytes("a") == 30 * 48 and port.played_bytes("b") == 0
    port.clear()
    assert not port.playing and not np.any(port.take(480)) and not idle
    port.play("c", spoken("d"))
    port.take(480)
    assert port.played_bytes("c") == 20 * 48 and idle == [True]
