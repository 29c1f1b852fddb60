"""Output guardrails: a filter between the model's text deltas and whoever speaks them.

The reply engine pushes each delta through an `OutputFilter` before the text enters the bot turn
or the `bot_text_delta` stream, so whatever it removes is never stored, spoken or sent. The
filter holds back only what a check cannot decide yet, and releases the rest at once:

- card masking needs the whole number, and a number can span deltas ("4111 1111" + " 1111 ..."):
  a trailing run of digits, spaces and dashes is held until something else follows it;
- a word list needs whole words: the trailing partial word is held;
- sentence checks (custom checks, a word list that cuts, a phrase) need the sentence: text is
  held until the sentence ends, which on voice channels costs nothing (speech is made sentence
  by sentence anyway) but delays text channels by up to a sentence.

Without a sentence check, a delta with no digit in its tail is released whole, untouched,
without allocating: the filter's common case is a few string scans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from voxline.guardrails.checks import (
    CustomCheck,
    GuardrailContext,
    Rewrite,
    Trip,
    as_trip,
    get_guardrail,
    is_async,
)
from voxline.guardrails.config import LanguageCheck, OutputGuardrails
from voxline.guardrails.detect import mask_cards
from voxline.providers.llm.base import ConfigurationError

# Same rule as the TTS chunker (`voxline.text.sentences`): terminators then whitespace, or a
# line break; the whitespace is part of the sentence released.
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]}”’»]*\s|\n")
_NUMBER_RUN = frozenset("0123456789 -")
_WORD_EXTRA = frozenset("_'’")


@dataclass
class Released:
    """What the filter lets through now. `notes` are the rewrites it made (for the turn's
    annotation); `trip` means the reply must stop after `text`."""

    text: str = ""
    notes: list[Trip] = field(default_factory=list)
    trip: Trip | None = None


class OutputRules:
    """One agent's output checks, compiled once per session; `filter()` makes the per-step
    stream filter."""

    def __init__(self, config: OutputGuardrails, ctx: GuardrailContext) -> None:
        self.config = config
        self.ctx = ctx
        language = config.professional_language
        self._words = _word_pattern(language)
        self._cut_words = self._words is not None and language.action == "cut"
        self._custom: list[tuple[str, CustomCheck]] = []
        for name in config.custom:
            check = get_guardrail(name)
            if is_async(check):
                raise ConfigurationError(
                    f"output guardrail {name!r} is a coroutine function: output checks run "
                    "inside the reply stream and must be plain functions"
                )
            self._custom.append((name, check))
        phrases = any(len(w.split()) > 1 for w in language.words)
        self.sentences = bool(self._custom) or self._cut_words or phrases
        self.words = self._words is not None
        self.active = config.mask_cards or self.words or self.sentences

    def filter(self) -> OutputFilter:
        return OutputFilter(self)

    def rewrite(self, text: str) -> tuple[str, list[Trip]]:
        """Fixed text (a greeting, a tool's note, a configured response): masked and rewritten,
        never cut, since it is the operator's own words or a tool's."""
        return self._rewrite(text)

    def _rewrite(self, text: str) -> tuple[str, list[Trip]]:
        notes: list[Trip] = []
        if self.config.mask_cards:
            masked = mask_cards(text, self.config.card_mask)
            if masked != text:
                notes.append(Trip("card_number", "card number masked", action="rewrite"))
                text = masked
        if self._words is not None and not self._cut_words:
            replaced = _replace_words(self._words, text, self.config.professional_language)
            if replaced != text:
                notes.append(Trip("professional_language", "word replaced", action="rewrite"))
                text = replaced
        return text, notes

    def check_sentence(self, sentence: str) -> tuple[str, list[Trip], Trip | None]:
        """One complete sentence through every check: (text to say, notes, trip)."""
        text, notes = self._rewrite(sentence)
        if self._cut_words and self._words is not None and self._words.search(text):
            return "", notes, Trip("professional_language", "unprofessional language", "cut")
        for name, check in self._custom:
            result = as_trip(check(text, self.ctx), name)  # type: ignore[arg-type]
            if isinstance(result, Trip):
                return "", notes, result
            if isinstance(result, Rewrite):
                notes.append(Trip(name, result.reason or "sentence rewritten", "rewrite"))
                text = result.text
        return text, notes, None


class OutputFilter:
    """The stream filter of one model step: `feed` each delta, `flush` at the step's end."""

    def __init__(self, rules: OutputRules) -> None:
        self.rules = rules
        self._held = ""
        self.stopped = False  # a check cut the reply: nothing more is released

    @property
    def held(self) -> str:
        return self._held

    def feed(self, delta: str) -> Released:
        if self.stopped:
            return Released()
        text = self._held + delta if self._held else delta
        split = self._decided(text)
        self._held = text[split:]
        if not split:
            return Released()
        return self._release(text[:split], final=False)

    def flush(self) -> Released:
        """The step is over: everything held is decided now."""
        text, self._held = self._held, ""
        if self.stopped or not text:
            return Released()
        return self._release(text, final=True)

    def _decided(self, text: str) -> int:
        """How much of `text` no check needs to wait on."""
        rules = self.rules
        split = len(text)
        if rules.sentences:
            split = 0
            for match in _SENTENCE_END.finditer(text):
                split = match.end()
        if rules.words:
            split = min(split, _word_start(text))
        if rules.config.mask_cards:
            split = min(split, _number_start(text))
        return split

    def _release(self, text: str, *, final: bool) -> Released:
        rules = self.rules
        if not rules.sentences:
            said, notes = rules._rewrite(text)
            return Released(said, notes)
        out = Released()
        parts: list[str] = []
        start = 0
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        if final and (not ends or ends[-1] < len(text)):
            ends.append(len(text))
        for end in ends:
            said, notes, trip = rules.check_sentence(text[start:end])
            out.notes.extend(notes)
            if trip is not None:
                out.trip = trip
                self.stopped = True
                self._held = ""
                break
            parts.append(said)
            start = end
        out.text = "".join(parts)
        return out


def _word_pattern(config: LanguageCheck) -> re.Pattern[str] | None:
    words = [w.strip() for w in config.words if w.strip()]
    if not words:
        return None
    alternation = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w'’])(?:{alternation})(?![\w'’])", re.IGNORECASE)


def _replace_words(pattern: re.Pattern[str], text: str, config: LanguageCheck) -> str:
    if config.replacement:
        return pattern.sub(config.replacement, text)
    # Removed outright: take one neighbouring space along, so no double space is left.
    removed = re.compile(rf"(?:\s(?:{pattern.pattern})|(?:{pattern.pattern})\s?)", pattern.flags)
    return removed.sub("", text)


def _number_start(text: str) -> int:
    """Where the trailing run of digits, spaces and dashes begins at its first digit (a number
    still being written); `len(text)` when the text does not end in one."""
    start = len(text)
    at = len(text)
    while at and text[at - 1] in _NUMBER_RUN:
        at -= 1
        if text[at].isdigit():
            start = at
    return start


def _word_start(text: str) -> int:
    """Where the trailing partial word begins; `len(text)` when the text ends between words."""
    at = len(text)
    while at and (text[at - 1].isalnum() or text[at - 1] in _WORD_EXTRA):
        at -= 1
    return at
