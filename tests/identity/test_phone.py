"""One person, one subject, however their number is written."""

from __future__ import annotations

import pytest

from voxline.identity import PhoneSubjectResolver, SubjectResolver, normalize_phone


@pytest.mark.parametrize(
    "raw",
    [
        "+14155550100",
        "4155550100",
        "(415) 555-0100",
        "415-555-0100",
        "1 415 555 0100",
        "+1 (415) 555-0100",
        "whatsapp:+14155550100",
        "tel:415.555.0100",
    ],
)
async def test_us_formats_are_one_subject(raw: str) -> None:
    resolver = PhoneSubjectResolver("US")
    assert isinstance(resolver, SubjectResolver)
    assert await resolver.resolve(raw, channel="sms") == "phone:+14155550100"


def test_the_default_country_reads_national_numbers() -> None:
    assert normalize_phone("020 7946 0018", "GB") == "+442079460018"
    assert normalize_phone("+44 20 7946 0018", "US") == "+442079460018"
    assert normalize_phone("01 42 68 53 00", "fr") == "+33142685300"


@pytest.mark.parametrize(
    "raw", ["", "anonymous", "Restricted", "+266696687", "+7378742833", "12", "not a number"]
)
async def test_unknown_callers_get_no_subject(raw: str) -> None:
    assert await PhoneSubjectResolver().resolve(raw, channel="voice") is None


async def test_client_identities_keep_their_name() -> None:
    resolver = PhoneSubjectResolver()
    assert await resolver.resolve("client:alice", channel="voice") == "client:alice"
    assert await resolver.resolve("client:", channel="voice") is None
