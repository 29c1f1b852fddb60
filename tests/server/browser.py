"""A browser stand-in for `/web/call`, and speech providers that need no model.

The fake speech is keyed on loudness, so a test says what the caller "says" by the amplitude of
the audio it sends: the VAD hears anything loud as speech, the STT turns each amplitude into a
fixed phrase, and the TTS speaks a constant tone (so bot audio is told apart from silence) for
`SECONDS_PER_CHAR` per character.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect

from voxline.channels.web_protocol import decode_bot_audio
from voxline.providers.stt.base import Transcript
from voxline.providers.tts.base import AudioChunk
from voxline.voice.providers import SpeechProviders

from .twilio_emulator import WAIT

RATE = 16000
FRAME = 320  # 20 ms
SECONDS_PER_CHAR = 0.02
TONE = 3000  # what the fake TTS speaks
QUESTION = 5000  # amplitude the fake STT hears as the question
STOP = 7000  # ... as "stop please"
PHRASES = {QUESTION: "what's the weather", STOP: "stop please"}


class LoudnessVADStream:
    def process(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> float:
        return 1.0 if np.abs(chunk.astype(np.int32)).max() > 1000 else 0.0

    def reset(self) -> None:
        return None


class LoudnessVAD:
    label = "loudness"
    sample_rate = RATE
    chunk_samples = 160

    def stream(self) -> LoudnessVADStream:
        return LoudnessVADStream()


class PhraseSTT:
    label = "phrases"
    sample_rate = RATE

    async def transcribe(
        self, pcm: npt.NDArray[np.int16], *, language: str | None = None
    ) -> Transcript:
        loudest = int(np.abs(pcm.astype(np.int32)).max()) if len(pcm) else 0
        return Transcript(PHRASES.get(loudest, ""), audio_duration=len(pcm) / RATE)


class LevelSTT:
    """Hears the phrase of the audio's typical loudness (the median of its loud samples) when it
    lies within `tolerance` of the phrase's amplitude: µ-law and resampling move a level by a
    little (5000 arrives as 5116), so the Realtime tests cannot key on the loudest sample."""

    label = "levels"
    sample_rate = RATE

    def __init__(self, phrases: Mapping[int, str], tolerance: int) -> None:
        self.phrases = phrases
        self.tolerance = tolerance

    async def transcribe(
        self, pcm: npt.NDArray[np.int16], *, language: str | None = None
    ) -> Transcript:
        loud = np.abs(pcm.astype(np.int32))
        loud = loud[loud > 1000]
        typical = int(np.median(loud)) if len(loud) else 0
        near = (p for a, p in self.phrases.items() if abs(typical - a) < self.tolerance)
        return Transcript(next(near, ""), audio_duration=len(pcm) / self.sample_rate)


class ToneTTS:
    label = "tone"
    sample_rate = RATE

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        self.texts.append(text)
        samples = round(len(text) * SECONDS_PER_CHAR * RATE)
        yield AudioChunk(np.full(samples, TONE, dtype=np.int16), RATE, text)


def fake_speech() -> SpeechProviders:
    return SpeechProviders(PhraseSTT(), ToneTTS(), LoudnessVAD())


def tone(amplitude: int, seconds: float) -> npt.NDArray[np.int16]:
    return np.full(round(seconds * RATE), amplitude, dtype=np.int16)


@dataclass
class BrowserCall:
    """One open `/web/call` socket. A reader task keeps every event and audio frame, and (like
    the page) confirms each frame as played the moment it arrives, unless `confirm` is off."""

    ws: ClientConnection
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: list[tuple[float, npt.NDArray[np.int16]]] = field(default_factory=list)
    confirm: bool = True
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for message in self.ws:
                if isinstance(message, bytes):
                    end, pcm = decode_bot_audio(message)
                    self.audio.append((end, pcm))
                    if self.confirm:
                        await self.ws.send(json.dumps({"type": "played", "position": end}))
                else:
                    self.events.append(json.loads(message))
                self._changed.set()
        self._changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def transcript(self, role: str) -> dict[str, str]:
        """The latest text of each turn of `role` (turn id -> text), in order."""
        turns: dict[str, str] = {}
        for event in self.of("transcript"):
            if event["role"] == role:
                turns[event["turn_id"]] = event["text"]
        return {turn: text for turn, text in turns.items() if text}

    async def wait_for(self, check: Callable[[], Any]) -> Any:
        """Wait until `check()` is truthy; returns its value."""
        async with asyncio.timeout(WAIT):
            while not (result := check()):
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"socket closed; events: {self.events}")
                self._changed.clear()
                await self._changed.wait()
        return result

    async def event(self, kind: str, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for e in self.of(kind):
                if all(e.get(k) == v for k, v in match.items()):
                    return e
            return None

        event: dict[str, Any] = await self.wait_for(found)
        return event

    async def speak(self, pcm: npt.NDArray[np.int16], *, pace: float = 0.0) -> None:
        """Send caller audio in 20 ms frames, `pace` seconds apart (0: as fast as possible)."""
        for start in range(0, len(pcm), FRAME):
            await self.ws.send(pcm[start : start + FRAME].astype("<i2").tobytes())
            await asyncio.sleep(pace)

    async def type(self, text: str) -> None:
        await self.ws.send(json.dumps({"type": "text", "text": text}))

    def bot_audio(self) -> npt.NDArray[np.int16]:
        return np.concatenate([pcm for _, pcm in self.audio]) if self.audio else np.zeros(0, "<i2")


@contextlib.asynccontextmanager
async def browser_call(
    base: str, query: Mapping[str, str] | None = None, **options: Any
) -> AsyncIterator[BrowserCall]:
    """A call on the server at `base` (http://...), open until the block ends."""
    url = base.replace("http://", "ws://") + "/web/call"
    if query:
        url += "?" + urlencode(query)
    async with connect(url, **options) as ws:
        call = BrowserCall(ws)
        call.start()
        try:
            yield call
        finally:
            await ws.close()
            if call._reader is not None:
                await call._reader
