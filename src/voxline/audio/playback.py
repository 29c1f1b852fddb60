"""Which words of the bot's reply has the caller actually heard?

Barge-in must truncate the bot turn to what was played, not to what was generated or sent:
otherwise the model's memory holds sentences the caller never heard. TTS chunks carry their text,
so a timeline of chunk durations plus the played position answers the question.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from voxline.providers.tts.base import AudioChunk

_WORD = re.compile(r"\S+")
_EPSILON = 1e-9  # positions come from sums of durations and of frames: equal up to rounding
HEARD_CHARS = 2000
"""Characters of fully played text kept for `heard_text`: what a log line about a barge-in
needs, not the whole call (the turns themselves are trimmed from `Delivery`, per turn)."""
MAX_SPANS = 512
"""Chunks queued and not yet played that are remembered: a sentence or so each, so this many
unplayed means playback reports stopped coming; the oldest are then forgotten (`forgotten`)."""


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

    Bounded for calls of any length: a chunk confirmed played is folded into the heard text at
    once (its span forgotten; the text keeps its last `heard_chars` characters), so only the
    chunks still playing or queued are held: what a barge-in needs to cut the one playing.
    """

    def __init__(self, *, heard_chars: int = HEARD_CHARS, max_spans: int = MAX_SPANS) -> None:
        self._spans: deque[_Span] = deque()  # not yet fully played, in timeline order
        self._heard = ""  # text of the spans fully played since the last clear (its tail)
        self._heard_chars = heard_chars
        self._max_spans = max_spans
        self._origin = 0.0  # where the current reply starts
        self._queued = 0.0  # end of everything queued
        self._played = 0.0
        self.forgotten = 0  # unplayed spans dropped at `max_spans`

    def push(self, chunk: AudioChunk) -> float:
        return self.add(chunk.text, chunk.duration)

    def add(self, text: str, duration: float) -> float:
        """Queues `duration` seconds speaking `text`; returns the timeline position at which it
        will have finished playing (what a mark for this chunk stands for)."""
        if duration < 0:
            raise ValueError(f"duration cannot be negative, got {duration}")
        span = _Span(self._queued, self._queued + duration, text)
        if len(self._spans) >= self._max_spans:
            self._spans.popleft()
            self.forgotten += 1
        self._spans.append(span)
        self._queued = span.end
        self._fold()
        return span.end

    def advance(self, seconds: float) -> None:
        """Playback moved on by `seconds` (it cannot run past what was queued)."""
        self._played = min(self._queued, self._played + max(0.0, seconds))
        self._fold()

    def advance_to(self, position: float) -> None:
        """Playback reached `position`; earlier positions (stale marks) change nothing."""
        self._played = max(self._played, min(position, self._queued))
        self._fold()

    @property
    def played(self) -> float:
        """Seconds of the current reply played so far."""
        return self._played - self._origin

    @property
    def pending(self) -> float:
        """Seconds queued but not yet played."""
        return self._queued - self._played

    @property
    def spans(self) -> int:
        """Chunks held: those playing or queued, never the ones already played."""
        return len(self._spans)

    def heard_text(self) -> str:
        """Text of every chunk fully played (the last `heard_chars` characters of it), plus the
        words of the chunk now playing that fit in the played fraction of it, weighting each
        word by its length in characters."""
        parts = [self._heard]
        if self._spans and self._spans[0].start < self._played:
            span = self._spans[0]
            fraction = (self._played - span.start) / (span.end - span.start)
            parts.append(_leading_words(span.text, fraction))
        return " ".join(part for part in parts if part)

    def clear(self) -> str:
        """Ends the current reply (barge-in, or it finished) and returns what was heard; audio
        still queued is forgotten, so the next reply starts where this one was cut."""
        heard = self.heard_text()
        self._spans.clear()
        self._heard = ""
        self._origin = self._played = self._queued
        return heard

    def _fold(self) -> None:
        """Move the spans played in full into the heard text."""
        spans = self._spans
        while spans and spans[0].end <= self._played + _EPSILON:
            text = spans.popleft().text.strip()
            if not text:
                continue
            heard = f"{self._heard} {text}" if self._heard else text
            if len(heard) > self._heard_chars:  # keep the tail, from a word's start
                cut = heard.find(" ", len(heard) - self._heard_chars)
                heard = heard[cut + 1 :] if cut >= 0 else heard[-self._heard_chars :]
            self._heard = heard


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
