"""The signature algorithm against Twilio's published vectors and the official validator."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers
from twilio.request_validator import RequestValidator

from voxline.server.signatures import (
    compute_signature,
    external_url,
    validate_signature,
    validate_websocket_signature,
)

URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": ["CA1234567890ABCDE"],
    "Digits": ["1234"],
    "From": ["+14158675309"],
    "To": ["+18005551212"],
    "Caller": ["+14158675309"],
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("http://mycompany.com:80/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
        ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    ],
)
def test_published_vectors(url: str, expected: str) -> None:
    assert compute_signature("12345", url, PARAMS) == expected


def test_multi_values_are_sorted_and_deduplicated() -> None:
    params = {"Sid": ["CA123"], "SidAccount": ["AC123"], "Digits": ["5678", "1234", "1234"]}
    assert compute_signature("12345", URL, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_the_port_may_be_written_or_left_out() -> None:
    with_port = compute_signature(
        "12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", PARAMS
    )
    assert validate_signature("12345", URL, PARAMS, with_port)
    bare = compute_signature("12345", URL, PARAMS)
    assert validate_signature(
        "12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", PARAMS, bare
    )
    assert not validate_signature("12345", URL, PARAMS, "")
    assert not validate_signature("54321", URL, PARAMS, bare)


def test_agrees_with_the_official_validator() -> None:
    flat = {k: v[0] for k, v in PARAMS.items()}
    official = RequestValidator("secret").compute_signature("https://a.example/x?y=1", flat)
    assert compute_signature("secret", "https://a.example/x?y=1", PARAMS) == official


def test_websocket_upgrades_are_signed_over_wss() -> None:
    assert compute_signature("12345", "wss://example.com/ws") == "HXrgvHt0qTHu33oSxSjpOvWtO60="
    wss = RequestValidator("t").compute_signature("wss://h.example/relay", {})
    assert validate_websocket_signature("t", "wss://h.example/relay", wss)
    https = RequestValidator("t").compute_signature("https://h.example/relay", {})
    assert validate_websocket_signature("t", "wss://h.example/relay", https)
    as_params = RequestValidator("t").compute_signature("wss://h.example/relay", {"a": "1"})
    assert validate_websocket_signature("t", "wss://h.example/relay?a=1", as_params)
    assert not validate_websocket_signature("t", "wss://h.example/other", wss)


def test_external_urls_prefer_the_public_url_then_forwarded_headers() -> None:
    headers = Headers({"x-forwarded-proto": "https", "x-forwarded-host": "tunnel.example, proxy"})

    def url(public: str | None, trust: bool, *, websocket: bool = False, query: str = "") -> str:
        return external_url(
            scheme="http",
            host="127.0.0.1:8080",
            path="/twilio/voice",
            query=query,
            headers=headers,
            public_url=public,
            trust_forwarded=trust,
            websocket=websocket,
        )

    assert url("https://v.example/app/", True) == "https://v.example/app/twilio/voice"
    assert url(None, True) == "https://tunnel.example/twilio/voice"
    assert url(None, False, websocket=True) == "ws://127.0.0.1:8080/twilio/voice"
    assert url("https://v.example", False, websocket=True, query="a=1") == (
        "wss://v.example/twilio/voice?a=1"
    )
