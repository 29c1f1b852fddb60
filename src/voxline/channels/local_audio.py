"""The local channel: the computer's microphone and speaker, through PortAudio (`sounddevice`).

PortAudio calls back on its own threads. The microphone callback copies each block and hands
it to the event loop with one `call_soon_threadsafe` (the one hop a thread boundary needs); the
speaker callback reads from a small locked buffer that `send` fills at real-time pace and
`clear` empties, so a barge-in silences the speaker within one block.

Without echo cancellation the microphone hears the agent, and the agent would interrupt
itself: use headphones, or `half_duplex=True`, which feeds the pipeline silence while the
speaker plays (barge-in is then impossible, but the agent can be used on laptop speakers).

An agent whose `llm` is a Realtime model runs on the line `voxline simulate` uses for it
(`simulate.RealtimeLine`): the microphone's blocks go to the model at 24 kHz and the speaker
callback takes the model's audio from the line's playout buffer (`Player`), which counts what
was played per item, so a barge-in truncates the model's answer to what came out of the speaker.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import numpy as np
import numpy.typing as npt

from voxline.agents.runtime import AgentRuntime, agent_spec_of
from voxline.audio.frames import AudioFrame
from voxline.conversation.session import Session
from voxline.conversation.turns import BotTurn, Turn, UserTurn
from voxline.providers.llm.base import LLMError
from voxline.providers.realtime.registry import realtime_part
from voxline.settings import Settings
from voxline.simulate import RealtimeLine
from voxline.voice.metrics import TurnLatency
from voxline.voice.pipeline import VoicePipeline
from voxline.voice.providers import load_speech_providers

PCM16 = npt.NDArray[np.int16]
BLOCK = 0.02  # seconds per PortAudio block, both ways


class AudioDeviceError(RuntimeError):
    """No usable audio device, or no PortAudio: the message is one actionable line."""


def _sounddevice() -> Any:
    try:
        import sounddevice
    except ImportError:
        raise AudioDeviceError(
            "audio devices need the sounddevice package: pip install 'voxline[voice]'"
        ) from None
    except OSError as exc:  # the Python package is there, the PortAudio library is not
        raise AudioDeviceError(
            f"PortAudio is not available ({exc}); install it (Debian/Ubuntu: "
            "apt-get install libportaudio2, macOS: brew install portaudio)"
        ) from None
    return sounddevice


@dataclass(frozen=True)
class AudioDevice:
    index: int
    name: str
    inputs: int
    outputs: int
    sample_rate: int
    default_input: bool
    default_output: bool


def list_devices() -> list[AudioDevice]:
    """Every device PortAudio sees; raises `AudioDeviceError` when PortAudio is missing."""
    sd = _sounddevice()
    try:
        found = sd.query_devices()
        default_in, default_out = sd.default.device
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot list audio devices: {exc}") from None
    return [
        AudioDevice(
            index=index,
            name=str(info["name"]),
            inputs=int(info["max_input_channels"]),
            outputs=int(info["max_output_channels"]),
            sample_rate=int(info["default_samplerate"]),
            default_input=index == default_in,
            default_output=index == default_out,
        )
        for index, info in enumerate(found)
    ]


def _device(sd: Any, device: int | str | None, kind: str) -> dict[str, Any]:
    try:
        info: dict[str, Any] = sd.query_devices(device, kind=kind)
    except (sd.PortAudioError, ValueError) as exc:
        which = "the default" if device is None else repr(device)
        raise AudioDeviceError(
            f"no usable {kind} device ({which}): {exc}; see `voxline devices`"
        ) from None
    return info


class Player(Protocol):
    """Where the speaker callback takes its samples from, instead of what `send` queued (a
    Realtime line's playout buffer); safe to call from PortAudio's thread."""

    @property
    def playing(self) -> bool: ...

    def take(self, samples: int) -> PCM16: ...


class LocalAudioTransport:
    """An `AudioTransport` on the sound card, at the devices' own rates (the pipeline
    resamples once). Opening it checks the devices; `start(sink)` begins streaming."""

    reports_playback = False

    def __init__(
        self,
        *,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        half_duplex: bool = False,
    ) -> None:
        self._sd = _sounddevice()
        mic = _device(self._sd, input_device, "input")
        speaker = _device(self._sd, output_device, "output")
        self.input_rate = int(mic["default_samplerate"])
        self.output_rate = int(speaker["default_samplerate"])
        self.half_duplex = half_duplex
        self._devices = (input_device, output_device)
        self._lock = threading.Lock()
        self._queue: deque[PCM16] = deque()
        self._offset = 0  # samples of the queue's head already played
        self._streams: list[Any] = []
        self._player: Player | None = None

    def start(self, sink: Callable[[PCM16], None], player: Player | None = None) -> None:
        """Stream microphone blocks to `sink` (called on the running event loop); the speaker
        plays what `send` queues, or what `player` gives."""
        self._player = player
        loop = asyncio.get_running_loop()
        silence = np.zeros(round(self.input_rate * BLOCK), dtype=np.int16)

        def heard(indata: Any, frames: int, time: Any, status: Any) -> None:
            pcm = silence[:frames] if self.half_duplex and self.playing else indata[:, 0].copy()
            loop.call_soon_threadsafe(sink, pcm)

        try:
            self._streams = [
                self._sd.InputStream(
                    samplerate=self.input_rate,
                    blocksize=round(self.input_rate * BLOCK),
                    device=self._devices[0],
                    channels=1,
                    dtype="int16",
                    callback=heard,
                ),
                self._sd.OutputStream(
                    samplerate=self.output_rate,
                    blocksize=round(self.output_rate * BLOCK),
                    device=self._devices[1],
                    channels=1,
                    dtype="int16",
                    callback=self._fill,
                ),
            ]
            for stream in self._streams:
                stream.start()
        except self._sd.PortAudioError as exc:
            self.close()
            raise AudioDeviceError(f"cannot open the audio devices: {exc}") from None

    @property
    def playing(self) -> bool:
        return self._player.playing if self._player is not None else bool(self._queue)

    async def send(self, frame: AudioFrame) -> None:
        with self._lock:
            self._queue.append(frame.pcm.copy())

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._offset = 0

    def close(self) -> None:
        for stream in self._streams:
            stream.stop()
            stream.close()
        self._streams = []

    def _fill(self, outdata: Any, frames: int, time: Any, status: Any) -> None:
        out = outdata[:, 0]
        if self._player is not None:
            out[:] = self._player.take(frames)
            return
        filled = 0
        with self._lock:
            while filled < frames and self._queue:
                head = self._queue[0]
                take = min(frames - filled, len(head) - self._offset)
                out[filled : filled + take] = head[self._offset : self._offset + take]
                filled += take
                self._offset += take
                if self._offset == len(head):
                    self._queue.popleft()
                    self._offset = 0
        out[filled:] = 0


async def run_talk(
    agent: AgentRuntime,
    settings: Settings,
    *,
    input_device: int | str | None = None,
    output_device: int | str | None = None,
    half_duplex: bool = False,
    out: TextIO = sys.stdout,
    transport: LocalAudioTransport | None = None,
) -> None:
    """Talk with `agent` until cancelled (Ctrl-C), printing the transcript and latencies.
    `transport`: the sound card, opened here when not given."""
    if transport is None:
        transport = LocalAudioTransport(
            input_device=input_device, output_device=output_device, half_duplex=half_duplex
        )
    realtime = realtime_part(agent_spec_of(agent).llm)
    # A Realtime engine trims its own turns; the cascaded pipeline marks what was played.
    session = Session(agent, settings=settings, channel="voice", auto_deliver=realtime is not None)
    _print_transcript(session, out)
    if realtime is not None:
        await _talk_realtime(session, realtime, transport, out)
        return
    speech = await load_speech_providers(agent_spec_of(agent), vad=settings.vad, settings=settings)
    pipeline = VoicePipeline(session, transport, stt=speech.stt, tts=speech.tts, vad=speech.vad)
    try:
        transport.start(pipeline.push_audio)
        await session.start()
        await session.wait_idle()
        out.write("listening: speak (Ctrl-C to stop)\n")
        await asyncio.Event().wait()
    finally:
        transport.close()
        await pipeline.close()
        await session.close()


async def _talk_realtime(
    session: Session, spec: str, transport: LocalAudioTransport, out: TextIO
) -> None:
    """`run_talk` on a Realtime model: `voxline simulate`'s line, on the sound card."""
    line = RealtimeLine(
        session, spec, input_rate=transport.input_rate, output_rate=transport.output_rate
    )
    try:
        await line.start(greet=True)
        transport.start(line.hear, player=line.port)
        out.write("listening: speak (Ctrl-C to stop)\n")
        await line.failed.wait()
        raise LLMError("the Realtime model was lost and could not be reached again")
    finally:
        transport.close()
        await line.close()


def _print_transcript(session: Session, out: TextIO) -> None:
    """What the caller said (once its words are known), what the agent said, and each turn's
    voice-to-voice latency."""
    printed: set[str] = set()

    def said(turn: Turn) -> None:
        if isinstance(turn, UserTurn) and turn.final and turn.content and turn.id not in printed:
            printed.add(turn.id)
            out.write(f"you> {turn.content}\n")

    def spoke(turn: BotTurn | None) -> None:
        if turn is not None and turn.content:
            out.write(f"agent> {turn.content}\n")

    def measured(kind: str, metrics: object) -> None:
        if kind == "turn" and isinstance(metrics, TurnLatency) and metrics.complete:
            out.write(f"  (voice to voice {metrics.milliseconds()['voice_to_voice_ms']} ms)\n")

    session.on("turn_added", said)
    session.on("turn_updated", said)
    session.on("reply_finished", spoke)
    session.on("metrics", measured)
