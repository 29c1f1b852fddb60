"""Deciding that the user has finished their turn, as a swappable strategy.

Silence alone cuts people off mid-thought ("I'd like to book... a table for two") or makes every
reply wait for the longest pause anyone might take. A strategy gets the trailing silence on every
VAD chunk and, if it wants, the partial transcript as STT produces it, and answers one question.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class EndOfTurnStrategy(Protocol):
    def is_complete(self, silence: float) -> bool:
        """After `silence` seconds of trailing silence, is the turn over? Called once per VAD
        chunk while the user is silent inside a turn, so it must be cheap."""
        ...

    def update_transcript(self, text: str) -> None:
        """The transcript so far of the current turn (called as STT partials arrive)."""
        ...

    def reset(self) -> None:
        """A new turn begins."""
        ...


class SilenceEndOfTurn:
    """The default: the turn ends after a fixed amount of silence."""

    def __init__(self, silence: float = 0.6) -> None:
        if silence <= 0:
            raise ValueError(f"end-of-turn silence must be positive, got {silence}")
        self.silence = silence

    def is_complete(self, silence: float) -> bool:
        return silence >= self.silence

    def update_transcript(self, text: str) -> None:
        """Silence alone decides; the words do not matter."""

    def reset(self) -> None:
        """Nothing to forget between turns."""


class TranscriptEndOfTurn:
    """The slot for a semantic end-of-turn model.

    `predict(transcript)` returns the probability that the user has finished (a small text
    classifier, a turn-detector model, or a rule). It runs when a new transcript arrives, not per
    audio chunk; the wait then slides from `max_silence` (surely unfinished) down to
    `min_silence` (surely finished). Until a transcript exists the plain `silence` applies.
    """

    def __init__(
        self,
        predict: Callable[[str], float],
        *,
        silence: float = 0.6,
        min_silence: float = 0.25,
        max_silence: float = 2.0,
    ) -> None:
        if not 0 < min_silence <= silence <= max_silence:
            raise ValueError(
                "need 0 < min_silence <= silence <= max_silence, got "
                f"{min_silence}, {silence}, {max_silence}"
            )
        self._predict = predict
        self.silence = silence
        self.min_silence = min_silence
        self.max_silence = max_silence
        self._needed = silence

    @property
    def needed(self) -> float:
        """The silence that currently ends the turn."""
        return self._needed

    def is_complete(self, silence: float) -> bool:
        return silence >= self._needed

    def update_transcript(self, text: str) -> None:
        if not text.strip():
            return
        done = min(1.0, max(0.0, self._predict(text)))
        self._needed = self.min_silence + (1.0 - done) * (self.max_silence - self.min_silence)

    def reset(self) -> None:
        self._needed = self.silence


def strategy_named(name: str, turn: Any) -> EndOfTurnStrategy | None:
    """The strategy an agent's `turn.end_of_turn` names, for the ones built here; None leaves
    the choice to the pipeline ("silence", "provider"). The model is imported only when asked
    for, so agents without the `smart-turn` extra never load onnxruntime for it."""
    if name != "smart-turn":
        return None
    from voxline.audio.smart_turn import SmartTurnEndOfTurn

    silence = float(turn.end_of_turn_silence)
    return SmartTurnEndOfTurn(
        ask_after=min(0.2, silence), silence=silence, max_silence=max(2.0, silence)
    )
