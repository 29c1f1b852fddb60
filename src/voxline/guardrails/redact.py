"""One redaction layer for everything that leaves the process as text.

Log lines, tracebacks, uvicorn's access log, SQL parameters logged at DEBUG, the debug feed's
`error` events and `/status` all pass through here. Two kinds of thing are masked:

- **Secrets, always**: credentials inside URLs (`scheme://user:pass@` becomes `scheme://***@`),
  API keys by shape (`sk-…`, `sk-ant-…`, voxline's own `vxk_…`), bearer tokens, `password=…`
  style assignments, and the exact values of every secret in `Settings` (the API key, the
  Twilio auth token, provider keys, the passwords in the database and Redis URLs). A secret has
  no legitimate reader in a log, so there is no switch for this.
- **Personal data, when `VOXLINE_REDACT_PII_IN_LOGS` is on** (the default): card numbers that
  pass Luhn, e-mail addresses, phone numbers and US SSNs, by the patterns in `pii.py`.

Text from URLs is also decoded before it is checked: a GET webhook's query string carries
`Body=my+card+is+4111+1111+1111+1111&From=%2B14155550100`, which no plain pattern would see.

The state (which secrets, whether PII is masked) is process-wide, set once at start-up by
`configure_redaction`, because the places that need it (a logging record factory, a structlog
processor, the feed) have no settings object to hand.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from numbers import Number
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from pydantic import SecretStr

from voxline.guardrails.pii import redact as redact_pii
from voxline.settings import Settings

MASK = "[secret]"
USERINFO_MASK = "***"
# Shorter configured values would mask innocent substrings everywhere ("pass", "1234"); the
# URL pattern still removes a short password from a URL, which is where it normally appears.
MIN_SECRET_LENGTH = 6

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@\"'<>]+@")
_API_KEY = re.compile(
    r"\b(?:"
    r"(?:sk|rk)[-_][A-Za-z0-9_\-]{16,}"  # OpenAI, Anthropic (sk-ant-…), Stripe-style keys
    r"|vxk_[A-Za-z0-9_\-]{20,}"  # voxline's stored API keys (server/api/auth.py TOKEN_PREFIX)
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r")"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]{12,}=*")
_AUTHORIZATION = re.compile(
    r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+|token\s+)?+)"
    r"(?!\[secret\])[^\s\"',;}]+"
)
_ASSIGNED = re.compile(
    r"(?i)(\b(?:password|passwd|pwd|secret|client[_-]?secret|api[_-]?key|access[_-]?token"
    r"|auth[_-]?token|refresh[_-]?token|private[_-]?key)[\"']?\s*[:=]\s*[\"']?)"
    r"(?!\[secret\])[^\s\"'&,;}]+"
)
# A structlog key (or a mapping key) whose value is a secret whatever it looks like.
_SECRET_KEY = re.compile(
    r"(?i)(?:^|[_-])(?:password|passwd|secret|api[_-]?key|auth[_-]?token|access[_-]?token"
    r"|refresh[_-]?token|authorization|credentials?)$"
)
# URL-encoded text: a query parameter's value, or a path segment with %XX escapes in it.
_QUERY_VALUE = re.compile(r"([?&][^=&\s#\"'<>]*=)([^&\s#\"'<>]+)")
_ENCODED_SEGMENT = re.compile(r"(/)([^/?#\s\"'<>]*%[0-9A-Fa-f]{2}[^/?#\s\"'<>]*)")
_SAFE_IN_QUERY = "[]*"


class _State:
    """The process-wide redaction settings; replaced whole, so readers never see half."""

    def __init__(self, secrets: frozenset[str] = frozenset(), pii: bool = True) -> None:
        self.secrets = secrets
        self.pii = pii
        ordered = sorted(secrets, key=len, reverse=True)  # longest first: no partial leftovers
        self.exact = re.compile("|".join(map(re.escape, ordered))) if ordered else None


_state = _State()
_remembered: set[str] = set()  # secrets added one by one, kept across configure_redaction
_settings_secrets: frozenset[str] = frozenset()
_lock = threading.Lock()


def secret_values(settings: Settings) -> set[str]:
    """Every secret a `Settings` holds: each `SecretStr` field, and the user name and password
    of each URL-valued field (database, Redis, provider base URLs)."""
    found: set[str] = set()
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(item, SecretStr):
                found.add(item.get_secret_value())
            elif isinstance(item, str) and "://" in item:
                found.update(_url_credentials(item))
    return found


def _url_credentials(url: str) -> set[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    # A password alone is a secret; a user name is one only when it is all there is (a token).
    if parts.password:
        return {parts.password, unquote(parts.password)}
    if parts.username:
        return {parts.username, unquote(parts.username)}
    return set()


def _variants(value: str) -> set[str]:
    """A secret as it may appear in text: as is, and URL-encoded (in a query or a URL)."""
    return {value, quote(value, safe=""), quote_plus(value, safe="")}


def _rebuild(pii: bool | None = None) -> None:
    values: set[str] = set()
    for secret in _settings_secrets | _remembered:
        if len(secret) >= MIN_SECRET_LENGTH:
            values |= _variants(secret)
    global _state
    _state = _State(frozenset(values), _state.pii if pii is None else pii)


def configure_redaction(settings: Settings | None = None, *, pii: bool | None = None) -> None:
    """Mask `settings`' secrets from now on (replacing those of an earlier call), and mask
    personal data when `pii` is true (unchanged when None)."""
    global _settings_secrets
    with _lock:
        if settings is not None:
            _settings_secrets = frozenset(secret_values(settings))
        _rebuild(pii)


def remember_secret(value: str | None) -> None:
    """Mask `value` wherever it appears from now on (a key that arrived some other way)."""
    if not value:
        return
    with _lock:
        _remembered.add(value)
        _rebuild()


def reset_redaction() -> None:
    """Forget every configured secret and mask PII again (the start-up state; for tests)."""
    global _settings_secrets
    with _lock:
        _settings_secrets = frozenset()
        _remembered.clear()
        _rebuild(pii=True)


def pii_enabled() -> bool:
    return _state.pii


# -- text ----------------------------------------------------------------------------------


def safe_url(url: str) -> str:
    """`url` fit to show: credentials before the host become `***`, and secret-looking query
    parameters (`api_key=`, `token=`…) are masked. Works on any text containing URLs too (an
    LLM spec like `openai-compatible:http://user:pass@host/v1#model`)."""
    return _ASSIGNED.sub(rf"\1{MASK}", _URL_USERINFO.sub(rf"\1{USERINFO_MASK}@", url))


def redact_secrets(text: str) -> str:
    """Mask secrets in `text` (always on; personal data is left as it is)."""
    return _redact(text, _state, pii=False)


def redact_text(text: str) -> str:
    """Mask secrets, and personal data when PII redaction is on: what log output gets."""
    state = _state
    return _redact(text, state, pii=state.pii)


def _redact(text: str, state: _State, *, pii: bool) -> str:
    if not text:
        return text
    text = _plain(text, state, pii)
    if "%" in text or "+" in text:
        text = _QUERY_VALUE.sub(lambda m: m.group(1) + _encoded(m.group(2), state, pii), text)
        text = _ENCODED_SEGMENT.sub(
            lambda m: m.group(1) + _encoded(m.group(2), state, pii, plus=False), text
        )
    return text


def _plain(text: str, state: _State, pii: bool) -> str:
    if state.exact is not None:
        text = state.exact.sub(MASK, text)
    text = _URL_USERINFO.sub(rf"\1{USERINFO_MASK}@", text)
    text = _API_KEY.sub(MASK, text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    text = _AUTHORIZATION.sub(rf"\1{MASK}", text)
    text = _ASSIGNED.sub(rf"\1{MASK}", text)
    # After the secrets: `user:pass@host.com` must lose its password, not become `user:[email]`.
    return redact_pii(text) if pii else text


def _encoded(value: str, state: _State, pii: bool, *, plus: bool = True) -> str:
    """Check the decoded form of a URL-encoded value; re-encode it only when something was
    masked, so untouched URLs stay byte for byte as they were."""
    decoded = unquote_plus(value) if plus else unquote(value)
    if decoded == value:
        return value
    masked = _plain(decoded, state, pii)
    if masked == decoded:
        return value
    return quote_plus(masked, safe=_SAFE_IN_QUERY) if plus else quote(masked, safe=_SAFE_IN_QUERY)


# -- structured values -----------------------------------------------------------------------


def redact_value(value: Any, *, secrets_only: bool = False) -> Any:
    """`value` with every string inside it redacted: dicts, lists and tuples are walked; a
    value under a secret-sounding key (`password`, `api_key`…) is masked whole; any other
    object whose `repr` would show something masked is replaced by its redacted `repr`."""
    state = _state
    return _walk(value, state, pii=state.pii and not secrets_only)


def _walk(value: Any, state: _State, *, pii: bool) -> Any:
    if isinstance(value, str):
        return _redact(value, state, pii=pii)
    if value is None or isinstance(value, bool | Number | bytes):
        return value
    if isinstance(value, Mapping):
        return {k: _masked_item(k, v, state, pii) for k, v in value.items()}
    if type(value) in (list, tuple, set, frozenset):  # not subclasses: a namedtuple is an object
        walked = [_walk(item, state, pii=pii) for item in value]
        return walked if type(value) is list else type(value)(walked)
    if isinstance(value, SecretStr):
        return MASK
    shown = repr(value)
    masked = _redact(shown, state, pii=pii)
    return value if masked == shown else masked


def _masked_item(key: Any, value: Any, state: _State, pii: bool) -> Any:
    if isinstance(key, str) and _SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    return _walk(value, state, pii=pii)


def redact_event_dict(event_dict: MutableMapping[str, Any]) -> None:
    """Redact a structlog event dict in place (its keys stay; see `redact_value`)."""
    state = _state
    for key, value in list(event_dict.items()):
        event_dict[key] = _masked_item(key, value, state, state.pii)


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: secrets always, personal data when on, in every value. It must run
    after `format_exc_info`/`dict_tracebacks`, so the tracebacks they render are covered too."""
    redact_event_dict(event_dict)
    return event_dict


def configured_secrets() -> Iterable[str]:
    """The exact values being masked (with their URL-encoded forms); for tests and `doctor`."""
    return _state.secrets
