"""What the streaming recognizer tests do with a stream: send audio as a channel does, and
read its events up to a kind."""

from __future__ import annotations

import asyncio

from tests.providers.stt_fakes import frames
from voxline.providers.stt.base import RecognitionStream, SttEvent, SttEventKind


def send(stream: RecognitionStream, audio: bytes, size: int = 160) -> None:
    """`audio` into a stream as a channel sends it: frame by frame (20 ms of µ-law)."""
    for frame in frames(audio, size):
        stream.send(frame)


async def collect(stream: RecognitionStream, until: SttEventKind | None = None) -> list[SttEvent]:
    """A stream's events up to the first of kind `until` (all of them when None)."""
    events: list[SttEvent] = []
    async with asyncio.timeout(5):
        async for event in stream.events():
            events.append(event)
            if event.kind is until:
                break
    return events
