"""The voice pipeline's side of speculative replies: when to guess, and what to do with a guess.

The listener transcribes the speech so far when the caller pauses inside a turn (see
`voxline.voice.listener`). If the caller stays silent, that transcript is the turn's final one,
and the turn ends only `end_of_turn_silence` later; `Speculator` starts the model on it right
away (`Session.speculate`), so its time to first token passes inside that wait. Then:

- the caller speaks again (a new pause, or a VAD chunk of speech): the guess is cancelled within
  a chunk, since the words it answered are no longer the turn;
- the turn ends and its final transcript matches the guess (`normalize`d): the guess is handed
  to `Session.send_text`, which commits it;
- it does not match, or the pipeline does not answer the turn (an interruption, a deferred
  answer, nothing said): the guess is cancelled.

At most one guess is open per pipeline; a later pause's guess replaces the earlier one.
"""

from __future__ import annotations

import structlog

from voxline.conversation.session import Session
from voxline.conversation.speculation import SpeculativeReply
from voxline.voice.listener import Listener

log = structlog.get_logger("voxline.voice")


class Speculator:
    """Holds the pipeline's open guess, with the pause of the turn it was made at."""

    def __init__(self, session: Session, listener: Listener) -> None:
        self.session = session
        self.listener = listener
        self.started = 0  # guesses made
        self.kept = 0  # guesses a final transcript committed
        self.discarded = 0  # guesses cancelled (the caller went on, or said something else)
        self._open: tuple[int, SpeculativeReply] | None = None

    @property
    def open(self) -> SpeculativeReply | None:
        return self._open[1] if self._open is not None else None

    def start(self, pause_id: int, text: str) -> None:
        """The caller has been silent since pause `pause_id` and said `text` so far."""
        if not text.strip():
            return
        self.drop("a later pause")
        guess = self.session.speculate(text)
        if guess is not None:
            self.started += 1
            self._open = (pause_id, guess)
            log.debug("speculative reply started", pause=pause_id)

    def check(self) -> None:
        """Called as the caller's audio comes in: a guess dies the moment they speak again.
        A turn that has just ended keeps its guess for `take`."""
        if self._open is None or not self.listener.user_speaking:
            return
        if not self.listener.still_paused(self._open[0]):
            self.drop("the caller spoke again")

    def take(self, final_text: str) -> SpeculativeReply | None:
        """The guess for a turn whose final transcript is `final_text`, if it guessed right;
        otherwise it is cancelled and None returned."""
        opened, self._open = self._open, None
        if opened is None:
            return None
        guess = opened[1]
        if guess.matches(final_text) and guess.failed is None:
            self.kept += 1
            return guess
        self._cancel(guess, "the final transcript differs")
        return None

    def drop(self, why: str) -> None:
        """Cancel the open guess, if any."""
        opened, self._open = self._open, None
        if opened is not None:
            self._cancel(opened[1], why)

    def _cancel(self, guess: SpeculativeReply, why: str) -> None:
        guess.cancel()
        self.discarded += 1
        log.debug("speculative reply dropped", why=why)
