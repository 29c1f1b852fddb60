"""Which words were heard: chunk by chunk, inside a chunk, and across a barge-in."""

from __future__ import annotations

import numpy as np
import pytest

from voxline.audio.playback import PlaybackTracker
from voxline.providers.tts.base import AudioChunk

FIRST = "Hello there."
SECOND = "How can I help you today?"


def tracker_with_two_chunks() -> tuple[PlaybackTracker, float, float]:
    tracker = PlaybackTracker()
    first = tracker.push(AudioChunk(np.zeros(22050, dtype=np.int16), 22050, FIRST))
    second = tracker.add(SECOND, 2.0)
    return tracker, first, second


@pytest.mark.parametrize(
    ("played", "heard"),
    [
        (0.0, ""),
        (0.4, ""),
        (0.5, "Hello"),  # "Hello" is 5 of 11 characters
        (1.0, FIRST),
        (1.25, FIRST),  # "How" is 3 of 20 characters: 0.125 of the chunk is not enough
        (1.3, "Hello there. How"),
        (2.0, "Hello there. How can I"),
        (2.99, "Hello there. How can I help you"),
        (3.0, "Hello there. How can I help you today?"),
        (9.0, "Hello there. How can I help you today?"),
    ],
)
def test_heard_text_follows_the_played_position(played: float, heard: str) -> None:
    tracker, _, _ = tracker_with_two_chunks()
    tracker.advance(played)
    assert tracker.heard_text() == heard


def test_marks_advance_to_the_end_of_their_chunk() -> None:
    tracker, first, second = tracker_with_two_chunks()
    assert (first, second) == (1.0, 3.0)
    tracker.advance_to(first)
    assert tracker.heard_text() == FIRST
    assert tracker.played == 1.0 and tracker.pending == 2.0
    tracker.advance_to(0.5)  # an older mark cannot move playback back
    assert tracker.played == 1.0


def test_clear_returns_what_was_heard_and_forgets_the_rest() -> None:
    tracker, _, second = tracker_with_two_chunks()
    tracker.advance(2.0)
    assert tracker.clear() == "Hello there. How can I"
    assert tracker.heard_text() == "" and tracker.pending == 0.0 and tracker.played == 0.0
    tracker.advance_to(second)  # Twilio echoes the discarded chunk's mark after `clear`
    assert tracker.heard_text() == ""
    third = tracker.add("Sure.", 0.5)
    assert third == pytest.approx(second + 0.5)  # the new reply starts where the old was cut
    tracker.advance(0.5)
    assert tracker.clear() == "Sure."


def test_playback_cannot_run_past_what_was_queued() -> None:
    tracker = PlaybackTracker()
    tracker.advance(5.0)
    assert tracker.played == 0.0
    tracker.add("Hi.", 1.0)
    tracker.advance(0.5)
    assert tracker.played == 0.5
    with pytest.raises(ValueError):
        tracker.add("bad", -1.0)


def test_silent_chunks_and_whitespace_do_not_add_stray_spaces() -> None:
    tracker = PlaybackTracker()
    tracker.add("  One. ", 1.0)
    tracker.add("", 0.3)
    tracker.add(" Two three.", 1.0)
    tracker.advance(10)
    assert tracker.heard_text() == "One. Two three."
