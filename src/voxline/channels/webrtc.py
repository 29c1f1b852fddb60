"""The browser call over WebRTC: the same `WebCall` as the WebSocket door, with the caller's
microphone arriving as Opus on a media track, the agent's voice leaving on a track of ours, and
the JSON events (docs/browser.md) on a data channel. Needs the `webrtc` extra (aiortc).

What differs from the socket is only where audio goes, so this module is an `AudioTransport`
(`RtcTransport`), the track it feeds (`BotAudioTrack`) and two pumps; the call logic, the
events and the outbox stay in `channels/web.py`.

The server's track is paced by aiortc's sender, which asks for a frame (`recv`) and sends it;
`recv` sleeps until each 20 ms frame is due on a clock of its own, and plays silence when the
agent has nothing to say, as a phone line does. Frames wait in a short bounded queue: the
pipeline keeps about 100 ms ahead (`BROWSER_OPTIONS.lead`), so a barge-in's `clear` drops at
most that, at once, and the caller hears the agent stop within one frame plus the browser's
jitter buffer. A frame counts as played when the track hands it to the encoder: the browser
plays it a jitter buffer later (tens of milliseconds), which is as close as the server can know
without a report per frame, and is what an interrupted turn is trimmed to.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
import structlog
from aiortc import MediaStreamTrack, RTCDataChannel
from aiortc.mediastreams import MediaStreamError

from voxline.audio.frames import AudioFrame
from voxline.channels.web import Message, Outbox
from voxline.telemetry import counters

log = structlog.get_logger("voxline.webrtc")

OPUS_RATE = 48000
"""WebRTC's Opus runs at 48 kHz both ways: the pipeline resamples the agent's voice to it once
(soxr, `voxline.audio.resample`), and the caller's audio is resampled from it by the listener."""
FRAME_SECONDS = 0.02
QUEUE_FRAMES = 25
"""Bot frames the track holds: 500 ms, five times what the pipeline keeps in flight, so only a
track nobody reads (a peer gone silent) ever fills it."""
STALL_SECONDS = 2.0
"""How long `put` waits for room before it drops the frame (counted): a sender that stopped
asking for frames must not hold the agent's pipeline for the rest of the call."""
CHANNEL_HIGH_WATER = 256 * 1024
"""Bytes the data channel may buffer before the event pump waits for it to drain; events then
queue in the call's `Outbox`, which drops the droppable ones and gives up on a dead client."""


class BotAudioTrack(MediaStreamTrack):
    """The agent's voice as an aiortc audio track: 20 ms frames of 48 kHz mono PCM16, paced in
    real time, silence between answers. `clear()` drops every queued frame at once."""

    kind = "audio"

    def __init__(
        self,
        on_played: Callable[[float], None] | None = None,
        *,
        rate: int = OPUS_RATE,
        limit: int = QUEUE_FRAMES,
        stall: float = STALL_SECONDS,
    ) -> None:
        super().__init__()
        self.on_played = on_played
        self.rate = rate
        self.samples = round(rate * FRAME_SECONDS)
        self.limit = limit
        self.stall = stall
        self._queue: deque[tuple[npt.NDArray[np.int16], float]] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._silence = np.zeros(self.samples, dtype=np.int16)
        self._started: float | None = None
        self._pts = 0
        self.sent_frames = 0  # frames of the agent's voice handed to the encoder
        self.cleared_frames = 0  # frames a barge-in (or cut-off) took back before they went
        self.dropped_frames = 0  # frames dropped because nobody read the track

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def put(self, frame: AudioFrame) -> None:
        """Queue one pipeline frame (split or padded to whole 20 ms frames), waiting while the
        queue is full; a frame that finds no room within `stall` seconds is dropped."""
        if frame.sample_rate != self.rate:
            raise ValueError(f"the track plays {self.rate} Hz, got {frame.sample_rate} Hz")
        for start in range(0, max(1, frame.num_samples), self.samples):
            part = frame.pcm[start : start + self.samples]
            pcm = np.zeros(self.samples, dtype=np.int16)
            pcm[: len(part)] = part  # a copy: the pipeline may reuse its buffer
            end = min(frame.end, frame.timestamp + (start + self.samples) / self.rate)
            if not await self._wait_for_room():
                self.dropped_frames += 1
                counters.dropped("webrtc bot audio: track not read")
                continue
            self._queue.append((pcm, end))

    async def _wait_for_room(self) -> bool:
        while len(self._queue) >= self.limit:
            self._room.clear()
            try:
                async with asyncio.timeout(self.stall):
                    await self._room.wait()
            except TimeoutError:
                return False
        return True

    def clear(self) -> int:
        """Drop every queued frame (barge-in); returns how many went."""
        dropped = len(self._queue)
        self._queue.clear()
        self.cleared_frames += dropped
        self._room.set()
        return dropped

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._started is None:
            self._started = now
        else:
            self._pts += self.samples
            due = self._started + self._pts / self.rate
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 1.0:  # the loop stalled: start a new clock rather than burst
                self._started, self._pts = now, 0
        position: float | None = None
        if self._queue:
            pcm, position = self._queue.popleft()
            self._room.set()
            self.sent_frames += 1
        else:
            pcm = self._silence
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.rate)
        if position is not None and self.on_played is not None:
            self.on_played(position)
        return frame


class RtcTransport:
    """`AudioTransport` for a WebRTC call: the agent's frames go to `BotAudioTrack`, which
    reports them played as it sends them; `clear` drops the queued ones and tells the page."""

    input_rate = OPUS_RATE
    output_rate = OPUS_RATE
    reports_playback = True

    def __init__(self, outbox: Outbox, track: BotAudioTrack) -> None:
        self.outbox = outbox
        self.track = track

    async def send(self, frame: AudioFrame) -> None:
        await self.track.put(frame)

    def clear(self) -> None:
        self.track.clear()
        self.outbox.event("clear")


class CallerAudio:
    """The caller's decoded Opus frames as mono PCM16 at 48 kHz (whatever layout and format
    the decoder gives: PyAV's resampler downmixes and converts)."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)

    def convert(self, frame: av.AudioFrame) -> list[npt.NDArray[np.int16]]:
        return [
            out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
            for out in self._resampler.resample(frame)
        ]


async def read_caller(
    track: MediaStreamTrack, heard: Callable[[npt.NDArray[np.int16]], None]
) -> None:
    """The caller's track into the call until it ends (the peer hung up or went away)."""
    audio = CallerAudio()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if isinstance(frame, av.AudioFrame):
            for pcm in audio.convert(frame):
                heard(pcm)


async def pump_events(outbox: Outbox, channel: RTCDataChannel) -> None:
    """The call's events into the data channel, in order, until the outbox closes or the
    channel does. Audio never enters this outbox (it goes on the track), so only text goes."""
    drained = asyncio.Event()
    channel.bufferedAmountLowThreshold = CHANNEL_HIGH_WATER // 4
    channel.on("bufferedamountlow", drained.set)
    while True:
        item: Message | None = await outbox.get()
        if channel.readyState != "open":
            return
        if item is None:  # the call is over: let the last events leave before it closes
            channel.bufferedAmountLowThreshold = 0
            if channel.bufferedAmount:
                drained.clear()
                await drained.wait()
            return
        if channel.bufferedAmount > CHANNEL_HIGH_WATER:
            drained.clear()
            await drained.wait()
        with contextlib.suppress(Exception):  # a channel closing under us ends the loop above
            channel.send(item if isinstance(item, str) else item.decode(errors="replace"))
