"""Checks `X-Twilio-Signature` on every Twilio request and WebSocket upgrade, and builds the
public URLs that TwiML points Twilio at (the same URLs Twilio will then sign)."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from starlette.requests import HTTPConnection

from voxline.server.signatures import (
    external_url,
    signature_algorithm,
    validate_signature,
    validate_websocket_signature,
)
from voxline.settings import Settings

log = structlog.get_logger("voxline.twilio.security")

SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"


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
        shared = settings.twilio_webhook_shared_key
        self._shared_key = shared.get_secret_value() if shared is not None else ""
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
        key, algorithm, problem = self._key_for(conn)
        if key and algorithm and validate_signature(key, url, params, signature, algorithm):
            return True
        self._reject(url, signature, problem)
        return False

    def check_websocket(self, conn: HTTPConnection) -> bool:
        if not self.enabled:
            return True
        url = self.url(conn, websocket=True)
        signature = conn.headers.get(SIGNATURE_HEADER, "")
        key, algorithm, problem = self._key_for(conn)
        if key and algorithm and validate_websocket_signature(key, url, signature, algorithm):
            return True
        self._reject(url, signature, problem)
        return False

    def _key_for(self, conn: HTTPConnection) -> tuple[str, str | None, str | None]:
        """(key, algorithm, why not): the auth token and HMAC-SHA1, or, when Twilio says a
        Webhooks Rule signed it, the shared key and the rule's algorithm."""
        settings_header = conn.headers.get(SIGNATURE_SETTINGS_HEADER)
        algorithm = signature_algorithm(settings_header)
        if algorithm is None:
            return "", None, "unsupported signature algorithm"
        if settings_header:
            if not self._shared_key:
                return "", None, "signed with a shared key, but none is configured"
            return self._shared_key, algorithm, None
        if not self._token:
            return "", None, "no TWILIO_AUTH_TOKEN configured"
        return self._token, algorithm, None

    def _reject(self, url: str, signature: str, problem: str | None = None) -> None:
        reason = "missing signature" if not signature else "signature does not match"
        if problem is not None:
            reason = problem
        log.warning("twilio signature rejected", url=url, reason=reason)
