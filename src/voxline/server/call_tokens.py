"""Call tokens: what binds a call's socket to the signed webhook that created it.

Twilio signs the WebSocket upgrade over a fixed URL with no nonce, while the caller's number,
the agent and the listener arrive in the socket's unsigned `setup` / `start` message. A leaked
upgrade signature would therefore let anyone open sessions as any caller. So the voice webhook
(whose signature covers CallSid, From and To) mints a short-lived token, an HMAC over exactly
those facts plus the agent, the listener and an expiry, and hands it to the socket as a TwiML
`<Parameter>`. The socket trusts only what the token says, refuses a token that is missing,
expired, forged or minted for another CallSid, and accepts each CallSid once (in the store, so
across every worker).

Format: `v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256)>`. The key defaults to one derived
from the Twilio auth token, so every worker of a fleet agrees without extra configuration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from voxline.settings import Settings

PARAM_TOKEN = "voxlineToken"
_VERSION = "v1"
_DERIVATION = b"voxline call token v1"


class CallTokenError(ValueError):
    """A token that cannot admit this call; the message says why, for the log."""


@dataclass(frozen=True)
class CallClaims:
    """What the signed webhook established about a call."""

    call_sid: str
    caller: str  # the remote party as the webhook gave it (From, or To for outbound calls)
    number: str  # our number
    agent: str
    listener: str | None
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CallTokens:
    def __init__(self, key: bytes, ttl: float, *, clock: Callable[[], float] = time.time) -> None:
        if not key:
            raise ValueError("call tokens need a key")
        self._key = key
        self.ttl = ttl
        self._now = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> CallTokens | None:
        """None when there is nothing to derive a key from (Twilio doors are closed then)."""
        if settings.call_token_secret is not None:
            key = settings.call_token_secret.get_secret_value().encode()
        elif settings.twilio_auth_token is not None:
            token = settings.twilio_auth_token.get_secret_value().encode()
            key = hmac.new(token, _DERIVATION, hashlib.sha256).digest()
        else:
            return None
        return cls(key, settings.call_token_ttl)

    def mint(
        self, *, call_sid: str, caller: str, number: str, agent: str, listener: str | None
    ) -> str:
        claims = CallClaims(call_sid, caller, number, agent, listener, self._now() + self.ttl)
        body = _b64(json.dumps(asdict(claims), separators=(",", ":")).encode())
        return f"{_VERSION}.{body}.{self._sign(body)}"

    def verify(self, token: str | None, call_sid: str) -> CallClaims:
        """The claims of a valid token for `call_sid`; raises `CallTokenError` otherwise."""
        if not token:
            raise CallTokenError("no call token")
        version, _, rest = token.partition(".")
        body, _, signature = rest.partition(".")
        if version != _VERSION or not body or not signature:
            raise CallTokenError("malformed call token")
        if not hmac.compare_digest(self._sign(body), signature):
            raise CallTokenError("forged call token")
        try:
            claims = CallClaims(**json.loads(_unb64(body)))
        except (ValueError, TypeError) as exc:
            raise CallTokenError("malformed call token") from exc
        if claims.expires < self._now():
            raise CallTokenError("expired call token")
        if not call_sid or not hmac.compare_digest(claims.call_sid, call_sid):
            raise CallTokenError("call token minted for another call")
        return claims

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
