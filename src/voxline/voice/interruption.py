"""Whether caller speech heard while the bot talks is an interruption.

The two classic failures pull in opposite directions: a bot that stops for every "uh-huh",
cough or door slam (false interruptions), and a bot that keeps talking over a caller who said
"wait, no". The gate already keeps noise shorter than `min_speech` out; this policy judges what
is left by its words, because only words tell "mm-hmm" from "hmm, hold on".
"""

from __future__ import annotations

import re
from enum import Enum

from voxline.agents.spec import TurnSettings

_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")


class Verdict(Enum):
    INTERRUPT = "interrupt"  # stop the bot now and answer
    DEFER = "defer"  # real words, but below the thresholds: answer once the bot is done
    IGNORE = "ignore"  # no words or only a backchannel: the bot carries on, nothing to answer


def words(text: str) -> list[str]:
    """Lower-case words, hyphenated ones kept whole ("uh-huh"), punctuation dropped."""
    return _WORD.findall(text.lower())


class InterruptionPolicy:
    """Judges a transcript of caller speech against an agent's turn settings."""

    def __init__(self, settings: TurnSettings) -> None:
        self.interruptible = settings.interruptible
        self.min_duration = settings.min_interruption_duration
        self.min_words = max(1, settings.min_interruption_words)
        self._backchannels = frozenset(
            " ".join(words(phrase)) for phrase in settings.backchannels if words(phrase)
        )
        self._backchannel_words = frozenset(
            word for phrase in self._backchannels for word in phrase.split()
        )

    def is_backchannel(self, spoken: list[str]) -> bool:
        """Only acknowledgements: a listed phrase, or listed words repeated ("yeah yeah",
        "okay, okay")."""
        if not spoken:
            return False
        return " ".join(spoken) in self._backchannels or all(
            word in self._backchannel_words for word in spoken
        )

    def judge(self, transcript: str, duration: float) -> Verdict:
        """`duration`: seconds of caller speech the transcript covers."""
        spoken = words(transcript)
        if not spoken or self.is_backchannel(spoken):
            return Verdict.IGNORE
        if not self.interruptible or duration < self.min_duration:
            return Verdict.DEFER
        if len(spoken) < self.min_words:
            return Verdict.DEFER
        return Verdict.INTERRUPT
