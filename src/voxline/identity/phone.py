"""Phone numbers as subjects: every way of writing one number becomes `phone:+E164`.

Parsing uses the `phonenumbers` package (Google's libphonenumber metadata), because national
formats, trunk prefixes and international dialling prefixes differ per country and a home-made
table would be wrong at the edges.
"""

from __future__ import annotations

import phonenumbers

# Twilio's stand-ins for withheld caller ID: ANONYMOUS, RESTRICTED, UNAVAILABLE, BLOCKED spelled
# on a keypad. Everyone who hides their number would otherwise share one memory.
WITHHELD_NUMBERS = frozenset({"+266696687", "+7378742833", "+86282452253", "+2562533"})
_WITHHELD_WORDS = frozenset({"anonymous", "restricted", "unavailable", "unknown", "blocked"})
# Address schemes Twilio puts in front of a number on some channels.
_PHONE_SCHEMES = ("whatsapp:", "sms:", "tel:", "messenger:")


def normalize_phone(raw: str, default_country: str = "US") -> str | None:
    """E.164 (`+14155550100`) for a number in any common format, or None if it is not one.

    Numbers without a country code are read as numbers of `default_country` (ISO 3166 alpha-2).
    """
    text = raw.strip()
    lowered = text.lower()
    for scheme in _PHONE_SCHEMES:
        if lowered.startswith(scheme):
            text = text[len(scheme) :].strip()
            break
    if not text or text.lower() in _WITHHELD_WORDS:
        return None
    try:
        number = phonenumbers.parse(text, default_country.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None if e164 in WITHHELD_NUMBERS else e164


class PhoneSubjectResolver:
    """The default resolver: phone numbers by E.164, Twilio Client identities by name."""

    def __init__(self, default_country: str = "US") -> None:
        self.default_country = default_country

    async def resolve(self, address: str, *, channel: str) -> str | None:
        text = address.strip()
        if text.lower().startswith("client:"):
            identity = text[len("client:") :].strip()
            return f"client:{identity}" if identity else None
        e164 = normalize_phone(text, self.default_country)
        return f"phone:{e164}" if e164 else None
