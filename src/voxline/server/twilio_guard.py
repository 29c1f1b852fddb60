"""Checks `X-Twilio-Signature` on every Twilio request and WebSocket upgrade, and builds the
public URLs that TwiML points Twilio at (the same URLs Twilio will then sign)."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from starlette.requests import HTTPConnection

from voxline.server.signatures import external_url, validate_signature, validate_websocket_signature
from voxline.settings import Settings

log = structlog.get_logger("voxline.twilio.security")

SIGNATURE_HEADER = "x-twilio-signature"


class TwilioGuard:
    """Without an auth token the server still starts (the terminal, the browser and the API work
    out of the box), but every Twilio request is refused: failing closed, loudly, beats both
    refusing to start and trusting unsigned requests."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.twilio_validate_signatures
        token = settings.twilio_auth_token
        self.configured = not self.enabled or token is not None
        if not self.configured:
            log.warning(
                "Twilio routes refuse every request until TWILIO_AUTH_TOKEN is set "
                "(or VOXLINE_TWILIO_VALIDATE_SIGNATURES=false for local development only)"
            )
        self._token = token.get_secret_value() if token is not None else ""
        self._public_url = settings.public_url
        self._trust_forwarded = settings.trust_forwarded_headers

    def url(self, conn: HTTPConnection, path: str | None = None, *, websocket: bool = False) -> str:
        """The public URL of `path` (default: this request's own path and query)."""
        root = str(conn.scope.get("root_path", ""))
        own = str(conn.scope["path"])
        if path is None:
            path = own[len(root) :] if root and own.startswith(root) else own
            query = conn.url.query
        else:
            query = ""
        if not self._public_url:
            path = root + path
        return external_url(
            scheme=conn.url.scheme,
            host=conn.headers.get("host") or conn.url.netloc,
            path=path,
            query=query,
            headers=conn.headers,
            public_url=self._public_url,
            trust_forwarded=self._trust_forwarded,
            websocket=websocket,
        )

    def check_request(self, conn: HTTPConnection, params: Mapping[str, list[str]]) -> bool:
        """A webhook: the URL plus the POST parameters (none for GET) must carry the signature."""
        if not self.enabled:
            return True
        url = self.url(conn)
        signature = conn.headers.get(SIGNATURE_HEADER, "")
        if self._token and validate_signature(self._token, url, params, signature):
            return True
        self._reject(url, signature)
        return False

    def check_websocket(self, conn: HTTPConnection) -> bool:
        if not self.enabled:
            return True
        url = self.url(conn, websocket=True)
        signature = conn.headers.get(SIGNATURE_HEADER, "")
        if self._token and validate_websocket_signature(self._token, url, signature):
            return True
        self._reject(url, signature)
        return False

    def _reject(self, url: str, signature: str) -> None:
        reason = "missing signature" if not signature else "signature does not match"
        if not self._token:
            reason = "no TWILIO_AUTH_TOKEN configured"
        log.warning("twilio signature rejected", url=url, reason=reason)
