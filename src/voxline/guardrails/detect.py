"""Finding personal data in what people say: card numbers, e-mails, phone numbers, national ids.

`pii.py` masks log lines, where erring towards masking costs nothing. Here a finding can make the
agent refuse a caller, so the patterns are stricter: a card must pass the Luhn check, a US SSN
must be written in groups (or follow the words "social security" / "SSN"), and each finding
says where it is, so callers can mask it, count it, or keep its last four digits. Speech-to-text
writes spoken e-mails as "jane at example dot com", so that form is found too.

Findings never overlap: cards are looked for first, then national ids, e-mails and phones, and a
later kind never claims text an earlier one found. Text without a digit or an "@"/" at " is
answered without running a single pattern (most sentences), which keeps this off the hot path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from voxline.guardrails.config import PII_KINDS, PiiKind

# 13-19 digits, in groups separated by up to two spaces or dashes.
_CARD = re.compile(r"(?<!\d)(?:\d[ \-]{0,2}){12,18}\d(?!\d)")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_SPOKEN_EMAIL = re.compile(r"(?i)(?<![\w.])[\w.+-]+\s+at\s+[a-z0-9-]+(?:\s+dot\s+[a-z0-9-]+)+\b")
# 7-15 digits with the usual separators, optionally a +country code; refined in `_phones`
# (a bare run of fewer than 10 digits is an order number more often than a phone).
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().\-]{5,22}\d(?![\w])")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
_SSN_SAID = re.compile(r"(?i)\b(?:ssn|social security(?: number)?)\b\D{0,20}?(\d{9})(?!\d)")
_SIN = re.compile(r"(?<![\d-])\d{3}([- ])\d{3}\1\d{3}(?![\d-])")
_NINO = re.compile(
    r"(?i)\b(?!bg|gb|nk|kn|tn|nt|zz)[a-ceghj-pr-tw-z][a-ceghj-npr-tw-z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[a-d]\b"
)
_HINT = re.compile(r"\d|@| at ", re.IGNORECASE)

LABELS: dict[PiiKind, str] = {
    "card": "[card ending {last4}]",
    "email": "[email]",
    "phone": "[phone]",
    "national_id": "[national id]",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of personal data: its kind and where it is in the text searched."""

    kind: PiiKind
    start: int
    end: int
    text: str

    @property
    def last4(self) -> str:
        return "".join(ch for ch in self.text if ch.isdigit())[-4:]


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies (and few random numbers do)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _cards(text: str) -> Iterable[tuple[int, int]]:
    for match in _CARD.finditer(text):
        if luhn_ok(_digits(match.group())):
            yield match.span()


def _national_ids(text: str) -> Iterable[tuple[int, int]]:
    yield from (m.span() for m in _SSN.finditer(text))
    yield from (m.span(1) for m in _SSN_SAID.finditer(text))
    yield from (m.span() for m in _SIN.finditer(text) if luhn_ok(_digits(m.group())))
    yield from (m.span() for m in _NINO.finditer(text))


def _emails(text: str) -> Iterable[tuple[int, int]]:
    yield from (m.span() for m in _EMAIL.finditer(text))
    yield from (m.span() for m in _SPOKEN_EMAIL.finditer(text))


def _phones(text: str) -> Iterable[tuple[int, int]]:
    for match in _PHONE.finditer(text):
        found = match.group().rstrip(" .-")
        if _ISO_DATE.fullmatch(found) or (found.count(".") >= 2 and " " not in found):
            continue  # a date, a version or an address, not a number to call
        count = len(_digits(found))
        grouped = not found.isdigit()  # "555-0100", "+44 20 ...": written as a phone number
        if 10 <= count <= 15 or (grouped and 7 <= count <= 15):
            yield match.start(), match.start() + len(found)


_FINDERS: tuple[tuple[PiiKind, Callable[[str], Iterable[tuple[int, int]]]], ...] = (
    ("card", _cards),
    ("national_id", _national_ids),
    ("email", _emails),
    ("phone", _phones),
)


def find_pii(text: str, kinds: Iterable[PiiKind] = PII_KINDS) -> list[Finding]:
    """Every piece of personal data of `kinds` in `text`, in text order, never overlapping."""
    if not text or not _HINT.search(text):
        return []
    wanted = set(kinds)
    taken: list[tuple[int, int]] = []
    found: list[Finding] = []
    for kind, finder in _FINDERS:
        if kind not in wanted:
            continue
        for start, end in sorted(set(finder(text))):
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            found.append(Finding(kind, start, end, text[start:end]))
    found.sort(key=lambda f: f.start)
    return found


def mask_pii(
    text: str,
    kinds: Iterable[PiiKind] = PII_KINDS,
    labels: dict[PiiKind, str] | None = None,
) -> str:
    """`text` with each finding replaced by its label (`LABELS`; `{last4}` is filled in)."""
    findings = find_pii(text, kinds)
    if not findings:
        return text
    shown = labels or LABELS
    parts: list[str] = []
    at = 0
    for finding in findings:
        parts.append(text[at : finding.start])
        parts.append(shown[finding.kind].format(last4=finding.last4))
        at = finding.end
    parts.append(text[at:])
    return "".join(parts)


def mask_cards(text: str, mask: str) -> str:
    """Only the card numbers of `text`, each replaced by `mask` (`{last4}` filled in): what the
    agent may say. Cheap when there is no long digit run."""
    if not any(ch.isdigit() for ch in text):
        return text

    def replace(match: re.Match[str]) -> str:
        digits = _digits(match.group())
        return mask.format(last4=digits[-4:]) if luhn_ok(digits) else match.group()

    return _CARD.sub(replace, text)
