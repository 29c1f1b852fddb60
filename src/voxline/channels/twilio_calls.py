"""Twilio's REST Calls API, for controlling a live call from our side.

A Media Stream has no message that ends or transfers the call: the stream only carries audio.
What a call does next is TwiML, and a live call's TwiML is replaced by updating the call
(`POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with a `Twiml` form field):
`<Hangup/>` ends it, `<Dial>` hands it to a person. Twilio then stops the stream itself.

The base URL is the same setting the SMS sender uses (`VOXLINE_TWILIO_API_BASE_URL`), so a
test or a proxy can stand in for Twilio. Failures are typed, so a caller can tell "could not
reach Twilio" (worth retrying) from "Twilio said no" (it will say no again).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import structlog

from voxline.channels.twiml import dial_twiml, hangup_twiml
from voxline.settings import Settings

log = structlog.get_logger("voxline.twilio.calls")

DEFAULT_TIMEOUT = 10.0
CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
NOT_IN_PROGRESS = 21220  # Twilio's code for updating a call that has already ended
_DECLARATION = re.compile(r"^<\?xml[^>]*\?>")


class CallControlError(RuntimeError):
    """A call could not be updated."""


class TwilioUnreachableError(CallControlError):
    """No answer from Twilio (network, timeout): the call is as it was."""


class CallUpdateRefusedError(CallControlError):
    """Twilio answered with an error: `status` is the HTTP status, `code` Twilio's error code
    (https://www.twilio.com/docs/api/errors) when the body carried one."""

    def __init__(self, message: str, *, status: int, code: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TwilioCalls:
    """Updates live calls of one account. One client (and its connection pool) per server."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = "https://api.twilio.com",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._prefix = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Calls"
        self._client = httpx.AsyncClient(auth=(account_sid, auth_token), timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioCalls | None:
        """A client when both the account SID and the auth token are set, else None."""
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        if not settings.twilio_account_sid or not token:
            return None
        return cls(settings.twilio_account_sid, token, base_url=settings.twilio_api_base_url)

    async def hang_up(self, call_sid: str) -> None:
        """End the call. A call that has already ended is not an error: it is what we wanted."""
        try:
            await self.update(call_sid, hangup_twiml())
        except CallUpdateRefusedError as exc:
            if exc.code != NOT_IN_PROGRESS:
                raise
            log.info("call already over; nothing to hang up", call_sid=call_sid)

    async def transfer(self, call_sid: str, target: str) -> None:
        """Hand the call to `target` (a phone number, or a `sip:` address)."""
        await self.update(call_sid, dial_twiml(target))

    async def update(self, call_sid: str, twiml: str) -> None:
        """Replace what the call is doing with `twiml` (a `<Response>` document)."""
        if not CALL_SID.match(call_sid):
            raise CallControlError(f"not a call SID: {call_sid[:40]!r}")
        form = {"Twiml": _DECLARATION.sub("", twiml, count=1)}
        try:
            response = await self._client.post(f"{self._prefix}/{call_sid}.json", data=form)
        except httpx.HTTPError as exc:
            raise TwilioUnreachableError(f"could not reach Twilio: {exc!r}") from exc
        if response.status_code >= 300:
            code, message = _error_of(response)
            raise CallUpdateRefusedError(
                f"Twilio refused the call update: {response.status_code} {message}",
                status=response.status_code,
                code=code,
            )
        log.info("call updated", call_sid=call_sid)

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_of(response: httpx.Response) -> tuple[int | None, str]:
    """Twilio's error code and message from an error body (`{"code": …, "message": …}`)."""
    try:
        body: Any = response.json()
    except ValueError:
        return None, response.text[:200]
    if not isinstance(body, dict):
        return None, response.text[:200]
    code = body.get("code")
    message = body.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message[:200] if isinstance(message, str) else response.text[:200],
    )


TRANSFER_FAILED = (
    "The transfer to a human did not go through: {error}. Tell the caller, and keep helping "
    "them yourself."
)


async def hang_up(rest: TwilioCalls | None, call_sid: str, log: Any) -> None:
    """End a Media Streams call: over REST when we can; either way the stream is closed next,
    and that alone ends the call, so a failed request is logged and not retried."""
    if rest is None:
        log.info("no Twilio credentials: closing the stream ends the call")
        return
    try:
        await rest.hang_up(call_sid)
    except CallControlError as exc:
        log.error("hang-up over REST failed; closing the stream instead", error=str(exc))


async def transfer(rest: TwilioCalls | None, call_sid: str, target: str, log: Any) -> str | None:
    """Redirect the call to a `<Dial>`. None when done; else a note for the agent, since a
    failed transfer keeps the call (closing the stream would hang up on the caller)."""
    if rest is None:
        return TRANSFER_FAILED.format(error="this server cannot control calls")
    try:
        await rest.transfer(call_sid, target)
    except CallControlError as exc:
        log.error("transfer failed", error=str(exc))
        return TRANSFER_FAILED.format(error=exc)
    log.info("call transferred")
    return None
