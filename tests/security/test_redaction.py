"""Nothing secret or personal leaves by accident (issue 10, part 3).

Secrets and personal data are planted where an attacker or a careless operator would put them:
an `sk-…` key, a password inside the LLM provider's URL, the Twilio auth token, the API key, a
card number, an e-mail address and a phone number sent through GET and POST webhooks, and an
exception whose message carries a secret. Then every way text leaves is searched for them: log
output at DEBUG (structlog, the stdlib root, uvicorn's access and error logs, SQL parameters,
httpx), `/status`, and the debug feed's `error` events.
"""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import quote, quote_plus, urlencode

import httpx
import pytest
import structlog
from uvicorn.logging import AccessFormatter

from tests.ports import free_port
from tests.server.conftest import shop_agent
from tests.server.twilio_emulator import PUBLIC, Twilio, running, sms_params
from voxline.guardrails.redact import (
    configure_redaction,
    redact_secrets,
    redact_text,
    reset_redaction,
    safe_url,
)
from voxline.logging import configure_logging, uninstall_stdlib_redaction
from voxline.providers.llm.base import ChatMessage, LLMError, LLMRequest
from voxline.providers.llm.openai_compat import OpenAICompatibleLLM
from voxline.server import ServerConfig, create_app
from voxline.server.feed import describe
from voxline.settings import Settings
from voxline.store.sql import SqlStore

SK = "sk-live-PLANTEDsecret0123456789"
URL_PASSWORD = "PlantedPassw0rd"
DB_PASSWORD = "DbPassw0rd-planted"
TWILIO_TOKEN = "5f3c9a1e7b2d4c6f8a0e1d3b5c7a9f2e"  # 32 hex, as Twilio's are
API_KEY = "vx-admin-PLANTED-key-77"
CARD = "4111 1111 1111 1111"
EMAIL = "ada.lovelace@example.org"
PHONE = "+14155550142"
BODY = f"my card is {CARD}, mail {EMAIL}, key {SK}, call me on +1 415 555 0142"

SECRETS = (SK, URL_PASSWORD, DB_PASSWORD, TWILIO_TOKEN, API_KEY)
# Every way the personal data may be written: as typed, URL-encoded, digits only.
PERSONAL = (
    CARD,
    "4111+1111+1111+1111",
    "4111111111111111",
    EMAIL,
    quote(EMAIL),
    "ada.lovelace",
    "4155550142",
    "415 555 0142",
    "415+555+0142",
)


def planted(text: str) -> list[str]:
    """The planted values (in any encoding) that occur in `text`."""
    forms = {v for s in SECRETS for v in (s, quote(s, safe=""), quote_plus(s))} | set(PERSONAL)
    return sorted(form for form in forms if form in text)


def provider_url(port: int) -> str:
    return f"http://voxuser:{URL_PASSWORD}@127.0.0.1:{port}/v1"


def planted_settings(tmp_path: Path, port: int, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "llm": f"openai-compatible:{provider_url(port)}#planted-model",
        "public_url": PUBLIC,
        "twilio_auth_token": TWILIO_TOKEN,
        "api_key": API_KEY,
        "openai_compatible_api_key": SK,
        "database_url": f"postgresql+asyncpg://voxline:{DB_PASSWORD}@127.0.0.1:1/voxline",
        "shutdown_grace_period": 2.0,
        "sms_reply_timeout": 5.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class Capture(logging.Handler):
    """Everything stdlib logging hands to a handler that does no redaction of its own."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.stream = io.StringIO()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.names.add(record.name)
        self.stream.write(self.format(record) + "\n")

    @property
    def text(self) -> str:
        return self.stream.getvalue()


ACCESS_FORMAT = '%(client_addr)s - "%(request_line)s" %(status_code)s'
LOUD = ("uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy.engine", "httpx", "openai")


@pytest.fixture
def isolated_logging() -> Iterator[None]:
    """Leave logging as this test found it: levels, root handlers, the record factory and the
    redaction state (`tests/conftest.py` resets structlog itself)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in LOUD}
    factory = logging.getLogRecordFactory()
    yield
    uninstall_stdlib_redaction()
    logging.setLogRecordFactory(factory)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)
    reset_redaction()


def loud(capture: Capture) -> None:
    """DEBUG everywhere, and `capture` on the root and on uvicorn's non-propagating loggers
    (call it after uvicorn started: its dictConfig replaces those loggers' handlers)."""
    logging.getLogger().setLevel(logging.DEBUG)
    for name in LOUD:
        logging.getLogger(name).setLevel(logging.DEBUG)
    for name in ("", "uvicorn", "uvicorn.access"):
        logging.getLogger(name).addHandler(capture)


def to_this_test(stdout: TextIO, stderr: TextIO) -> None:
    """Point uvicorn's own handlers at the streams the test reads: they keep the ones that were
    `sys.stdout`/`sys.stderr` when uvicorn configured them, which pytest has replaced since."""
    for name, stream in (("uvicorn", stderr), ("uvicorn.access", stdout)):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler and not isinstance(
                handler.stream,
                io.StringIO,  # the test's own
            ):
                handler.stream = stream  # not setStream: it flushes the old, closed one


def detach(capture: Capture) -> None:
    for name in ("", "uvicorn", "uvicorn.access"):
        logging.getLogger(name).removeHandler(capture)


# -- the redaction layer ---------------------------------------------------------------------


def test_secrets_are_always_masked_and_personal_data_only_when_asked(
    isolated_logging: None,
) -> None:
    configure_redaction(planted_settings(Path("/tmp"), 9), pii=False)
    text = (
        f"GET {provider_url(9)} with {SK} for Bearer {API_KEY} token {TWILIO_TOKEN} "
        f"db {DB_PASSWORD}; {BODY}"
    )
    secrets_only = redact_text(text)
    assert not [s for s in planted(secrets_only) if s in SECRETS]
    assert "http://***@127.0.0.1:9/v1" in secrets_only
    assert CARD in secrets_only and EMAIL in secrets_only  # PII redaction is off
    configure_redaction(pii=True)
    assert planted(redact_text(text)) == []
    assert CARD in redact_secrets(text)  # the feed's redaction never touches content


def test_query_strings_are_checked_decoded(isolated_logging: None) -> None:
    configure_redaction(planted_settings(Path("/tmp"), 9), pii=True)
    query = urlencode(sms_params(BODY, PHONE))
    line = f'127.0.0.1:5555 - "GET /twilio/sms?{query} HTTP/1.1" 200'
    masked = redact_text(line)
    assert planted(masked) == [], masked
    assert "MessageSid=SM" in masked and "NumMedia=0" in masked  # the rest is left as it was
    token_in_query = f"/hook?auth={quote_plus(TWILIO_TOKEN)}&x={quote(API_KEY, safe='')}"
    assert planted(redact_secrets(token_in_query)) == []


def test_safe_url_strips_credentials_and_secret_parameters() -> None:
    assert safe_url("https://u:p@host/v1?api_key=abc&model=m") == (
        "https://***@host/v1?api_key=[secret]&model=m"
    )
    assert (
        safe_url("openai-compatible:http://u:p@h:8/v1#m") == "openai-compatible:http://***@h:8/v1#m"
    )
    assert safe_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


# -- log pipelines -----------------------------------------------------------------------------


def _raise_with_secret() -> None:
    raise RuntimeError(f"upstream {provider_url(1)} refused key {SK} for {EMAIL}")


def test_tracebacks_are_redacted_after_they_are_rendered(
    isolated_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("DEBUG", json=True, settings=planted_settings(Path("/tmp"), 1))
    capture = Capture()
    logging.getLogger().addHandler(capture)
    try:
        try:
            _raise_with_secret()
        except RuntimeError:
            structlog.get_logger("t").exception("call failed", api_key=API_KEY, note=BODY)
            logging.getLogger("voxline.test").exception("call failed: %s", BODY)
            logging.getLogger("voxline.test").error("object arg %r", {"token": TWILIO_TOKEN})
    finally:
        detach(capture)
    err = capsys.readouterr().err
    line = json.loads(err.strip().splitlines()[-1])
    assert "Traceback" in line["exception"] and "_raise_with_secret" in line["exception"]
    assert "http://***@127.0.0.1:1/v1" in line["exception"]
    assert line["api_key"] == "[secret]"
    assert "Traceback" in capture.text and "object arg" in capture.text
    assert planted(err) == [] and planted(capture.text) == [], (err, capture.text)


def test_uvicorn_access_lines_are_redacted_even_after_its_dict_config(
    isolated_logging: None,
) -> None:
    configure_logging("INFO", json=True, settings=planted_settings(Path("/tmp"), 1))
    from uvicorn.config import LOGGING_CONFIG

    logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn does when it starts
    access = logging.getLogger("uvicorn.access")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AccessFormatter(ACCESS_FORMAT, use_colors=False))
    access.addHandler(handler)
    try:
        path = "/twilio/sms?" + urlencode(sms_params(BODY, PHONE))
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "GET", path, "1.1", 200)
    finally:
        access.removeHandler(handler)
    assert "GET /twilio/sms?" in stream.getvalue() and " 200" in stream.getvalue()
    assert planted(stream.getvalue()) == [], stream.getvalue()


def test_personal_data_stays_when_its_redaction_is_off(
    isolated_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=True, redact_pii=False, settings=planted_settings(Path("/"), 1))
    structlog.get_logger("t").info("caller said", text=BODY)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert CARD in line["text"] and EMAIL in line["text"]
    assert SK not in line["text"]


# -- providers and the feed ----------------------------------------------------------------------


async def _failure(llm: OpenAICompatibleLLM) -> LLMError:
    request = LLMRequest(messages=[ChatMessage(role="user", content="hi")])
    with pytest.raises(LLMError) as failed:
        async for _ in llm.stream(request):
            pass
    return failed.value


async def test_a_failing_provider_names_its_url_without_credentials(
    isolated_logging: None,
) -> None:
    configure_redaction(planted_settings(Path("/tmp"), 1))
    port = free_port()
    llm = OpenAICompatibleLLM("m", base_url=provider_url(port), api_key=SK, max_retries=0)
    try:
        error = await _failure(llm)
    finally:
        await llm.aclose()
    assert f"cannot connect to http://***@127.0.0.1:{port}/v1" in str(error)
    assert planted(str(error)) == []
    event = describe("error", {"error": error, "where": "reply"})
    assert event is not None and planted(json.dumps(event)) == []
    leaky = RuntimeError(f"tool got {TWILIO_TOKEN} and {API_KEY} from {provider_url(port)}")
    event = describe("error", {"error": leaky, "where": "tool"})
    assert event is not None and planted(json.dumps(event)) == [], event


# -- the whole server ----------------------------------------------------------------------------


@dataclass
class Served:
    base: str
    twilio: Twilio
    capture: Capture
    access: io.StringIO  # uvicorn.access as uvicorn's AccessFormatter writes it


@pytest.fixture
async def served(
    isolated_logging: None, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> AsyncIterator[Served]:
    """The server with the planted settings, logging at DEBUG, with `capfd` capturing from
    before the server starts."""
    settings = planted_settings(tmp_path, free_port())  # nothing listens: the provider fails
    configure_logging("DEBUG", json=True, settings=settings)
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'leaks.db'}")
    await store.open()
    capture = Capture()
    try:
        app = create_app(ServerConfig(agents=[shop_agent()], settings=settings, store=store))
        async with running(app) as (base, _server):
            loud(capture)
            access = io.StringIO()
            uvicorn_style = logging.StreamHandler(access)
            uvicorn_style.setFormatter(AccessFormatter(ACCESS_FORMAT, use_colors=False))
            logging.getLogger("uvicorn.access").addHandler(uvicorn_style)
            try:
                yield Served(base, Twilio(base, token=TWILIO_TOKEN), capture, access)
            finally:
                await app.state.hub.close(grace=0)  # the last SQL writes, still captured
                detach(capture)
                logging.getLogger("uvicorn.access").removeHandler(uvicorn_style)
    finally:
        await store.close()


async def test_planted_secrets_and_personal_data_never_leave(
    served: Served, capfd: pytest.CaptureFixture[str]
) -> None:
    to_this_test(sys.stdout, sys.stderr)
    twilio = served.twilio
    params = sms_params(BODY, PHONE)
    # A GET webhook: everything is in the query string of the access log line.
    path = "/twilio/sms?" + urlencode(params)
    signature = twilio.sign(PUBLIC + path)
    async with httpx.AsyncClient(base_url=served.base, timeout=30) as client:
        got = await client.get(path, headers={"X-Twilio-Signature": signature})
        assert got.status_code == 200, got.text
        posted = await twilio.post("/twilio/sms", params)  # and the same as a POST
        assert posted.status_code == 200, posted.text
        anonymous = await client.get("/status")
        status = await client.get("/status", headers={"Authorization": f"Bearer {API_KEY}"})

    assert "agents" not in anonymous.json()  # the API key is configured: details need it
    shown = status.json()
    assert shown["providers"]["default_llm"].startswith("openai-compatible:http://***@127.0.0.1")
    assert planted(anonymous.text) == [] and planted(status.text) == [], status.text

    out, err = capfd.readouterr()
    logged = served.capture.text
    # The capture saw what it is there to see, so finding nothing below means something.
    assert "GET /twilio/sms?" in logged and "POST /twilio/sms" in logged, logged[-3000:]
    access = served.access.getvalue()  # through uvicorn's own access formatter
    assert '"GET /twilio/sms?' in access and '"GET /twilio/sms?' in out
    assert "Logging error" not in err  # no formatter choked on a redacted argument
    assert "sqlalchemy.engine" in " ".join(served.capture.names)
    assert "cannot connect to http://***@127.0.0.1" in err + logged
    for where, text in (("stdout", out), ("stderr", err), ("logging", logged), ("access", access)):
        assert planted(text) == [], f"{where}: {planted(text)}"
