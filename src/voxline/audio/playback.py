"""Which words of the bot's reply has the caller actually heard?

Barge-in must truncate the bot turn to what was played, not to what was generated or sent:
otherwise the model's memory holds sentences the caller never heard. TTS chunks carry their text,
so a timeline of chunk durations plus the played position answers the question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voxline.providers.tts.base import AudioChunk

_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class _Span:
    start: float
    end: float
    text: str


class PlaybackTracker:
    """A timeline of queued bot audio and how far into it playback has got.

    Positions are seconds on one timeline that only grows across replies, so a late
    acknowledgement of audio that `clear()` already discarded (Twilio echoes pending marks after
    a `clear`) is recognised as old and ignored. Feed it with `push` as audio is queued to the
    channel, then either `advance(seconds)` from a clock or `advance_to(position)` with the
    position `push` returned when a mark for that chunk comes back.
    """

    def __init__(self) -> None:
        self._spans: list[_Span] = []
        self._origin = 0.0  # where the current reply starts
        self._queued = 0.0  # end of everything queued
        self._played = 0.0

    def push(self, chunk: AudioChunk) -> float:
        return self.add(chunk.text, chunk.duration)

    def add(self, text: str, duration: float) -> float:
        """Queues `duration` seconds speaking `text`; returns the timeline position at which it
        will have finished playing (what a mark for this chunk stands for)."""
        if duration < 0:
            raise ValueError(f"duration cannot be negative, got {duration}")
        span = _Span(self._queued, self._queued + duration, text)
        self._spans.append(span)
        self._queued = span.end
        return span.end

    def advance(self, seconds: float) -> None:
        """Playback moved on by `seconds` (it cannot run past what was queued)."""
        self._played = min(self._queued, self._played + max(0.0, seconds))

    def advance_to(self, position: float) -> None:
        """Playback reached `position`; earlier positions (stale marks) change nothing."""
        self._played = max(self._played, min(position, self._queued))

    @property
    def played(self) -> float:
        """Seconds of the current reply played so far."""
        return self._played - self._origin

    @property
    def pending(self) -> float:
        """Seconds queued but not yet played."""
        return self._queued - self._played

    def heard_text(self) -> str:
        """Text of every chunk fully played, plus the words of the chunk now playing that fit in
        the played fraction of it, weighting each word by its length in characters."""
        parts: list[str] = []
        for span in self._spans:
            if span.end <= self._played:
                parts.append(span.text.strip())
                continue
            if span.start < self._played:
                fraction = (self._played - span.start) / (span.end - span.start)
                parts.append(_leading_words(span.text, fraction))
            break
        return " ".join(part for part in parts if part)

    def clear(self) -> str:
        """Ends the current reply (barge-in, or it finished) and returns what was heard; audio
        still queued is forgotten, so the next reply starts where this one was cut."""
        heard = self.heard_text()
        self._spans.clear()
        self._origin = self._played = self._queued
        return heard


def _leading_words(text: str, fraction: float) -> str:
    words = list(_WORD.finditer(text))
    total = sum(len(word.group()) for word in words)
    spoken = 0
    end = None
    for word in words:
        spoken += len(word.group())
        if spoken > fraction * total + 1e-9:
            break
        end = word.end()
    return text[:end].strip() if end is not None else ""
