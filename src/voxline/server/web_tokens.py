"""Browser session tokens: what lets a browser that holds no API key into `/web/call`.

An operator's backend (holding an API key) asks `POST /api/web/tokens` for a token for one agent,
optionally one conversation, and hands the browser a link to the page with the token in it. The
socket then admits exactly what the token names: a token for agent A cannot open agent B, and a
token bound to a conversation cannot open another one. A token that names no conversation may
start new conversations; the socket then sends the browser a token bound to the one it started
(same expiry), so a reload resumes it and nothing else.

Tokens are not single-use (a page reconnects with its token), so they are short-lived instead
(`VOXLINE_WEB_TOKEN_TTL`, 10 minutes by default) and never travel in a URL the server sees: the
page link carries them in the fragment (`/#token=...`), which browsers never send, and the page
passes them to the socket as a WebSocket subprotocol. Revoking the key that issued a token does
not revoke the token; its expiry does.

Format: `w1.<base64url(JSON claims)>.<base64url(HMAC-SHA256)>`, which is also a valid
subprotocol token. The key is derived from `VOXLINE_CALL_TOKEN_SECRET` when set, else from
`VOXLINE_API_KEY`, so every worker of a fleet agrees without extra configuration; a derivation
label of its own keeps a call token from ever passing as a web token, and the reverse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from voxline.server.config import HostedAgent
from voxline.settings import Settings

VERSION = "w1"
MAX_TTL = 7 * 24 * 3600.0  # the longest life the API grants a token
_DERIVATION = b"voxline web session token v1"


class WebTokenError(ValueError):
    """A token that admits nothing; the message says why (for the log and the browser)."""


@dataclass(frozen=True)
class WebClaims:
    """What a session token lets a browser open."""

    agent: str
    conversation: str | None
    expires: float  # Unix time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def looks_like_web_token(credential: str) -> bool:
    """Whether a credential is meant as a session token (else it is tried as an API key)."""
    return credential.startswith(VERSION + ".")


class WebTokens:
    def __init__(self, key: bytes, ttl: float, *, clock: Callable[[], float] = time.time) -> None:
        if not key:
            raise ValueError("web session tokens need a key")
        self._key = key
        self.ttl = ttl
        self._now = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> WebTokens | None:
        """None when there is nothing to derive a key from: then no token is issued or valid."""
        if settings.call_token_secret is not None:
            secret = settings.call_token_secret.get_secret_value()
        elif settings.api_key is not None:
            secret = settings.api_key.get_secret_value()
        else:
            return None
        key = hmac.new(secret.encode(), _DERIVATION, hashlib.sha256).digest()
        return cls(key, settings.web_token_ttl)

    def mint(
        self, agent: str, conversation: str | None = None, *, ttl: float | None = None
    ) -> tuple[str, WebClaims]:
        life = min(self.ttl if ttl is None else ttl, MAX_TTL)
        return self.sign(WebClaims(agent, conversation, self._now() + life))

    def sign(self, claims: WebClaims) -> tuple[str, WebClaims]:
        body = _b64(json.dumps(asdict(claims), separators=(",", ":")).encode())
        return f"{VERSION}.{body}.{self._sign(body)}", claims

    def verify(self, token: str) -> WebClaims:
        """The claims of a valid, unexpired token; raises `WebTokenError` otherwise."""
        version, _, rest = token.partition(".")
        body, _, signature = rest.partition(".")
        if version != VERSION or not body or not signature:
            raise WebTokenError("malformed session token")
        if not hmac.compare_digest(self._sign(body), signature):
            raise WebTokenError("forged session token")
        try:
            raw = json.loads(_unb64(body))
            claims = WebClaims(
                agent=str(raw["agent"]),
                conversation=None if raw["conversation"] is None else str(raw["conversation"]),
                expires=float(raw["expires"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise WebTokenError("malformed session token") from exc
        if claims.expires < self._now():
            raise WebTokenError("expired session token")
        return claims

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def open_to_web(agent: HostedAgent, hosted: Mapping[str, HostedAgent]) -> bool:
    """Whether the browser channel may open `agent`: its spec's `web`, or when unset, yes for
    an agent the server hosts from its own files or code (`hosted`), no for one defined over
    the API (anyone with a key can define one; offering it to browsers is a separate choice)."""
    if agent.spec.web is not None:
        return agent.spec.web
    return hosted.get(agent.name) is agent
