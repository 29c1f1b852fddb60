"""Checks that keep a model's summary a summary: within its word budget, free of loops, covering
the newest turns it replaces, and keeping the facts of the summary before it.

Small local models fail in a few recognisable ways, all seen here: a phrase repeated until the
token limit ("The user asked if..." to 516 words against a 200-word budget), an answer far over
the budget, and a re-summary that copies the earlier summary word for word and drops the turns
it was meant to add. Asking more firmly helps sometimes; these functions make the result hold
whatever the model did. They are plain text functions so the summarizer's policy (retry, trim,
append) reads as a few lines and each rule is tested on its own.

A summary is read as the prompt asks for it: a synopsis, then a line "Facts:" and one "- " line
per fact, ideally "- label: value". Anything else is treated as synopsis.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

LOOP_SENTENCE_REPEATS = 3  # the same sentence this often is a loop, not emphasis
LOOP_NGRAM = 4
LOOP_NGRAM_REPEATS = 5  # a 4-word run this often ("the user asked if") is a loop
LATEST_LINE_WORDS = 30  # the most an appended line for an uncovered turn may take

_FACTS_HEADER = re.compile(r"^\W*facts\W*$", re.IGNORECASE)
_FACTS_TRAILING = re.compile(r"^(.*[.!?])\s+\W*facts\W*$", re.IGNORECASE)
_FACTS_INLINE = re.compile(r"^\W*facts\s*:\s*(\S.*)$", re.IGNORECASE)
_LABEL = re.compile(r"^\W*(?:summary|synopsis)\W*:\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[\w'’-]+", re.UNICODE)
_STOPWORDS = frozenset(
    " ".join(
        (
            "a an and are as at be been but by can could did do does for from had has have he",
            "her him his how i if in into is it its just me my no not of on or our she so than",
            "that the their them then there these they this to up us was we were what when",
            "where which who why will with would you your yes okay ok please thanks thank",
            "hello hi sure well also about user agent asked said says wants want like know",
            "tell right before after should really actually because something anything",
            "everything nothing there's that's great perfect thing things",
        )
    ).split()
)


def words(text: str) -> int:
    """Word count as the budget counts it: whitespace-separated tokens."""
    return len(text.split())


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def sentences(text: str) -> list[str]:
    """Sentences and lines, in order (a fact line is one unit even without a full stop)."""
    out: list[str] = []
    for line in text.splitlines():
        out += [part for part in _SENTENCE_END.split(line.strip()) if part]
    return out


def loop_start(text: str) -> int | None:
    """Character offset where a repetition loop begins, or None when there is none.

    A loop is a sentence said `LOOP_SENTENCE_REPEATS` times or a run of `LOOP_NGRAM` words said
    `LOOP_NGRAM_REPEATS` times; it begins at the second occurrence of that sentence or run, so
    cutting there keeps everything said once."""
    seen: Counter[str] = Counter()
    first_repeat: dict[str, int] = {}
    position = 0
    for line in text.splitlines(keepends=True):
        for match in re.finditer(r"[^.!?\n]+[.!?]*", line):
            key = _norm(match.group())
            if len(key.split()) >= 3:
                seen[key] += 1
                if seen[key] == 2:
                    first_repeat[key] = position + match.start()
                if seen[key] >= LOOP_SENTENCE_REPEATS:
                    return first_repeat[key]
        position += len(line)
    tokens = [(m.group().lower(), m.start()) for m in _WORD.finditer(text)]
    grams: Counter[tuple[str, ...]] = Counter()
    starts: dict[tuple[str, ...], int] = {}
    for index in range(len(tokens) - LOOP_NGRAM + 1):
        gram = tuple(token for token, _ in tokens[index : index + LOOP_NGRAM])
        grams[gram] += 1
        if grams[gram] == 2:
            starts[gram] = tokens[index][1]
        if grams[gram] >= LOOP_NGRAM_REPEATS:
            return _line_start(text, starts[gram])
    return None


def _line_start(text: str, offset: int) -> int:
    """Back to the start of the sentence holding `offset`, so a cut never splits one."""
    cut = max(text.rfind(". ", 0, offset), text.rfind("\n", 0, offset))
    return 0 if cut < 0 else cut + 1


@dataclass
class Summary:
    """A summary split into the parts the checks work on."""

    synopsis: list[str] = field(default_factory=list)  # sentences
    facts: list[str] = field(default_factory=list)  # fact lines without the bullet
    latest: list[str] = field(default_factory=list)  # lines appended for uncovered turns

    @classmethod
    def parse(cls, text: str) -> Summary:
        summary = cls()
        in_facts = False
        for raw in text.splitlines():
            line = raw.strip()
            if not summary.synopsis and not in_facts:
                line = _LABEL.sub("", line)  # "Summary: ..." says nothing
            if not line:
                continue
            trailing = _FACTS_TRAILING.match(line)
            if trailing:  # "... where things stand. Facts:"
                summary.synopsis += sentences(trailing.group(1))
                in_facts = True
                continue
            inline = _FACTS_INLINE.match(line)
            if _FACTS_HEADER.match(line) or inline:
                in_facts = True
                if inline:
                    summary.facts.append(_BULLET.sub("", inline.group(1)).strip())
                continue
            if line.lower().startswith("latest:"):
                summary.latest.append(line.split(":", 1)[1].strip())
            elif in_facts and (_BULLET.match(raw) or ":" in line):
                summary.facts.append(_BULLET.sub("", line).strip())
            else:
                in_facts = False
                summary.synopsis += sentences(line)
        return summary

    def render(self) -> str:
        parts = []
        if self.synopsis:
            parts.append(" ".join(self.synopsis))
        if self.facts:
            parts.append("Facts:\n" + "\n".join(f"- {fact}" for fact in self.facts))
        if self.latest:
            parts.append("\n".join(f"Latest: {line}" for line in self.latest))
        return "\n".join(parts)

    def dedupe(self) -> Summary:
        """Each sentence and fact once (the first time it was said)."""
        return Summary(_unique(self.synopsis), _unique(self.facts), _unique(self.latest))

    def fit(self, budget: int) -> Summary:
        """Cut at sentence and line boundaries until the whole is at most `budget` words.

        What goes first says what matters least: synopsis sentences from the end, then fact
        lines from the end, then the words of the first sentence (a run-on sentence has no
        boundary to cut at). The lines for the newest turns go last: they are what a re-summary
        most often loses."""
        synopsis, facts, latest = list(self.synopsis), list(self.facts), list(self.latest)

        def size() -> int:  # as rendered: bullets, the "Facts:" header and prefixes count
            return words(Summary(synopsis, facts, latest).render())

        while size() > budget and len(synopsis) > 1:
            synopsis.pop()
        while size() > budget and facts:
            facts.pop()
        if size() > budget and synopsis:  # one run-on sentence: cut at a word instead
            synopsis[0] = _clip(synopsis[0], words(synopsis[0]) - (size() - budget))
            if not synopsis[0]:
                synopsis.pop()
        while size() > budget and latest:
            latest[-1] = _clip(latest[-1], words(latest[-1]) - (size() - budget))
            if not latest[-1]:
                latest.pop()
        return Summary(synopsis, facts, latest)


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = _norm(item)
        if key and key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _clip(text: str, limit: int) -> str:
    parts = text.split()
    if limit <= 0:
        return ""
    return text if len(parts) <= limit else " ".join(parts[:limit]) + "…"


def fact_label(fact: str) -> str | None:
    """The label of a "label: value" fact, normalised; None for a fact without one."""
    if ":" not in fact:
        return None
    label = _norm(fact.split(":", 1)[0])
    return label if 0 < len(label.split()) <= 5 else None


def carry_facts(previous: Summary, current: Summary) -> list[str]:
    """The previous summary's facts the current one lost, to add back.

    A fact counts as kept when the current summary says it (its key terms all appear anywhere),
    and as replaced when a current fact has the same label ("Order status: shipped" then
    "Order status: refunded"): that is how a correction shows. Any other fact is carried over,
    so the fact sheet only ever loses what the conversation changed."""
    text = _norm(current.render())
    labels = {label for fact in current.facts if (label := fact_label(fact)) is not None}
    lost = []
    for fact in previous.facts:
        label = fact_label(fact)
        if label is not None and label in labels:
            continue
        terms = key_terms(fact.split(":", 1)[1] if label is not None else fact)
        if terms and all(_present(term, text) for term in terms):
            continue
        if not terms and _norm(fact) in text:
            continue
        lost.append(fact)
    return lost


def key_terms(text: str) -> set[str]:
    """What a line is about, lowercased: words with digits (ids, amounts, dates), names and
    other capitalised words past a sentence's first, and longer content words."""
    terms: set[str] = set()
    for sentence in sentences(text):
        for index, match in enumerate(_WORD.finditer(sentence)):
            word = match.group().strip("'’-")
            lower = word.lower()
            if not word or lower in _STOPWORDS:
                continue
            numeric = any(char.isdigit() for char in word)
            if numeric or (index > 0 and word[0].isupper()) or len(word) >= 6:
                terms.add(lower)
    return terms


def covers(summary_text: str, line: str, *, share: float = 0.5) -> bool:
    """The summary mentions at least `share` of the line's key terms (every one with digits)."""
    terms = key_terms(line)
    if not terms:
        return True
    text = _norm(summary_text)
    found = {term for term in terms if _present(term, text)}
    numbers = {term for term in terms if any(char.isdigit() for char in term)}
    return numbers <= found and len(found) >= share * len(terms)


def _present(term: str, text: str) -> bool:
    """`term` occurs in the normalised `text`: exactly when it holds a digit, else by its first
    five letters, so "arrives" finds "arrive" and "refunded" finds "refund"."""
    term = _norm(term)
    if any(char.isdigit() for char in term) or len(term) < 6:
        return term in text
    return term[:5] in text


def compact_line(line: str, limit: int = LATEST_LINE_WORDS) -> str:
    """A transcript line shortened for the summary's "Latest:" part."""
    return _clip(" ".join(line.split()), limit)
