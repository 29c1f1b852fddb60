"""Redaction of personal data (emails, phone and card numbers, US SSNs) from text bound for logs.

Callers say their card number out loud; logs are shipped to third parties and kept for months.
Redaction is pattern-based and errs towards masking: a masked order number costs a debugging
minute, a leaked card number costs far more. Two digit shapes that fill log lines and are never
phone numbers are left alone: ISO dates and IPv4 addresses.

`redact.py` applies these patterns (when `VOXLINE_REDACT_PII_IN_LOGS` is on) together with the
secret patterns, everywhere text leaves the process.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
# 13-19 digits, optionally grouped by spaces or dashes: card numbers.
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# Phone numbers: optional +country, 7-15 digits with common separators; not a date
# (2024-05-01, 2024-05-01 12) nor an IPv4 address (192.168.100.200).
_PHONE = re.compile(
    r"(?<![\w.])(?!\d{4}-\d{2}-\d{2}(?!\d))(?!\d{1,3}(?:\.\d{1,3}){3}(?![\d.]))"
    r"\+?\d(?:[\s().-]*\d){6,14}(?![\w])"
)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if _luhn_ok(digits) else match.group()


def redact(text: str) -> str:
    """Mask personal data in `text`; everything else is left as it was."""
    text = _EMAIL.sub("[email]", text)
    text = _SSN.sub("[ssn]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub("[phone]", text)
