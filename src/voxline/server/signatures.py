"""`X-Twilio-Signature`: Twilio's request signing (protocols.md §3.3, §3.4).

By default Twilio signs with the auth token and HMAC-SHA1. When a Webhooks Rule matches, it
signs with the rule's SharedKey and the algorithm named in `X-Twilio-Webhooks-Signature-Settings`
(`key=...,algorithm=HMAC_SHA256`); only the hash changes, the signed string is the same.

Written from the published algorithm rather than taken from the `twilio` package, which the
server does not depend on. The URL that was signed is the one Twilio requested, which behind a
proxy is not the one this process sees, so `external_url` rebuilds it from the configured public
URL or the forwarding headers; a WebSocket upgrade is signed over its `wss://` form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from starlette.datastructures import Headers

Params = Mapping[str, Iterable[str]]

HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
_HASHES = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def signature_algorithm(settings_header: str | None) -> str | None:
    """The algorithm an `X-Twilio-Webhooks-Signature-Settings` header names: HMAC_SHA1 when the
    header is absent or names none, None when it names one we do not support (refuse)."""
    if not settings_header:
        return HMAC_SHA1
    for part in settings_header.split(","):
        name, _, value = part.partition("=")
        if name.strip().lower() == "algorithm" and value.strip():
            algorithm = value.strip().upper()
            return algorithm if algorithm in _HASHES else None
    return HMAC_SHA1


_WEBSOCKET_SCHEMES = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}


def compute_signature(
    auth_token: str, url: str, params: Params | None = None, algorithm: str = HMAC_SHA1
) -> str:
    """base64(HMAC(key, url + each param name and value, names sorted, values sorted and
    de-duplicated)), exactly as Twilio signs a request."""
    payload = url
    for name in sorted(params or {}):
        for value in sorted(set((params or {})[name])):
            payload += name + value
    digest = hmac.new(auth_token.encode(), payload.encode(), _HASHES[algorithm]).digest()
    return base64.b64encode(digest).decode()


def validate_signature(
    auth_token: str,
    url: str,
    params: Params | None,
    signature: str,
    algorithm: str = HMAC_SHA1,
) -> bool:
    """Whether `signature` signs `url` and `params`, with the port written or left out (Twilio
    may sign either form of the URL); compared in constant time."""
    if not signature or algorithm not in _HASHES:
        return False
    expected = signature.encode()
    return any(
        hmac.compare_digest(
            compute_signature(auth_token, candidate, params, algorithm).encode(), expected
        )
        for candidate in _port_variants(url)
    )


def validate_websocket_signature(
    auth_token: str, url: str, signature: str, algorithm: str = HMAC_SHA1
) -> bool:
    """An upgrade has no body. Which form Twilio signs when the URL has a query is not settled
    (protocols.md §3.4), so accept the full URL, or the base URL with the query as params, each
    over `wss://` and over the `https://` that older behaviour used."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    as_params: dict[str, list[str]] = {}
    for name, value in query:
        as_params.setdefault(name, []).append(value)
    base_scheme = "https" if parts.scheme in ("wss", "https") else "http"
    for scheme in (_WEBSOCKET_SCHEMES[base_scheme], base_scheme):
        full = urlunsplit(parts._replace(scheme=scheme))
        if validate_signature(auth_token, full, None, signature, algorithm):
            return True
        if query:
            bare = urlunsplit(parts._replace(scheme=scheme, query=""))
            if validate_signature(auth_token, bare, as_params, signature, algorithm):
                return True
    return False


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    variants = [url]
    if parts.port is not None and parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=prefix + host)))
    elif parts.port is None and default is not None:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    return variants


def external_url(
    *,
    scheme: str,
    host: str,
    path: str,
    query: str = "",
    headers: Headers,
    public_url: str | None,
    trust_forwarded: bool,
    websocket: bool = False,
) -> str:
    """The URL a client outside used to reach `path` here (app-relative, e.g. `/twilio/voice`).

    `public_url` (the app's root as the world sees it) wins; otherwise `X-Forwarded-Proto` and
    `X-Forwarded-Host` when trusted; otherwise what this server saw. A forged header cannot
    forge a signature, so trusting them costs nothing in security.
    """
    if public_url:
        base = urlsplit(public_url.rstrip("/"))
        scheme, host, prefix = base.scheme, base.netloc, base.path
    else:
        prefix = ""
        if trust_forwarded:
            scheme = _first(headers.get("x-forwarded-proto")) or scheme
            host = _first(headers.get("x-forwarded-host")) or host
    if websocket:
        scheme = _WEBSOCKET_SCHEMES.get(scheme, scheme)
    else:
        scheme = {"wss": "https", "ws": "http"}.get(scheme, scheme)
    return urlunsplit((scheme, host, prefix + path, query, ""))


def _first(value: str | None) -> str | None:
    """The client-most entry of a comma-separated forwarding header."""
    if not value:
        return None
    return value.split(",")[0].strip() or None
