"""SMS through Twilio: replies cut into messages, and a sender for replies that come later.

A reply that is ready while Twilio waits on the webhook goes back as TwiML `<Message>`s. A reply
that comes later (a slow model, a human approving a tool an hour after) has no request to ride
on, so it goes out through an `SmsSender`: Twilio's REST API in production, anything in tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import httpx
import structlog

from voxline.conversation.session import Session
from voxline.conversation.turns import BotTurn, Turn
from voxline.text.sentences import split_sentences

MAX_SEGMENT_CHARS = 1600  # Twilio's limit on one message body
_PARAGRAPHS = re.compile(r"\n\s*\n")

log = structlog.get_logger("voxline.twilio.sms")


def split_message(text: str, limit: int = MAX_SEGMENT_CHARS) -> list[str]:
    """Cut a reply into bodies of at most `limit` characters at sentence ends (clauses or spaces
    only inside an over-long sentence), keeping paragraph breaks inside a body."""
    bodies: list[str] = []
    current = ""
    for paragraph in _PARAGRAPHS.split(text.strip()):
        for index, sentence in enumerate(split_sentences(paragraph, max_chars=limit)):
            joiner = ("\n\n" if index == 0 else " ") if current else ""
            if len(current) + len(joiner) + len(sentence) <= limit:
                current += joiner + sentence
            else:
                bodies.append(current)
                current = sentence
    if current:
        bodies.append(current)
    return bodies


@runtime_checkable
class SmsSender(Protocol):
    async def send(self, *, to: str, from_: str, body: str) -> None: ...


class SmsSendError(RuntimeError):
    pass


class TwilioRestSender:
    """Sends through `POST /2010-04-01/Accounts/{sid}/Messages.json`; `base_url` points at
    Twilio (or at a stand-in)."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = "https://api.twilio.com",
        timeout: float = 10.0,
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._client = httpx.AsyncClient(auth=(account_sid, auth_token), timeout=timeout)

    async def send(self, *, to: str, from_: str, body: str) -> None:
        try:
            response = await self._client.post(
                self._url, data={"To": to, "From": from_, "Body": body}
            )
        except httpx.HTTPError as exc:
            raise SmsSendError(f"could not reach Twilio: {exc}") from exc
        if response.status_code >= 300:
            raise SmsSendError(
                f"Twilio refused the message: {response.status_code} {response.text[:200]}"
            )
        log.info("sms sent", segments=1, chars=len(body))

    async def aclose(self) -> None:
        await self._client.aclose()


class ReplyCollector:
    """The bot text a session produces while attached: what a webhook answers with, or what is
    sent afterwards. Turns are read at the end, so streamed content is complete by then."""

    def __init__(self) -> None:
        self._turns: list[BotTurn] = []
        self._session: Session | None = None
        self._off: Callable[[], None] | None = None

    def attach(self, session: Session) -> None:
        self._session = session
        self._off = session.on("turn_added", self._on_turn)

    def detach(self) -> None:
        if self._off is not None:
            self._off()
            self._off = None

    def _on_turn(self, turn: Turn, **_: Any) -> None:
        if isinstance(turn, BotTurn):
            self._turns.append(turn)

    def text(self) -> str:
        """The collected replies, minus any turn an interruption removed since."""
        live = self._session.turns if self._session is not None else None
        kept = [t for t in self._turns if live is None or t.id in live]
        return "\n\n".join(t.content.strip() for t in kept if t.content.strip())
