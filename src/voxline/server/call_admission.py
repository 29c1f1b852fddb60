"""Who a Twilio call socket is for: taken from the call token the signed webhook minted, never
from the socket's unsigned `setup` / `start` parameters.

The voice webhook's signature covers the CallSid and the numbers; the socket's does not (a fixed
URL, no nonce). `CallAdmission` mints a token at the webhook and, at the socket, admits a call
only with a valid, unexpired token minted for its CallSid, once per CallSid across the fleet
(`Store.use_once`). Every refusal is logged with its reason. With signature checks turned off
(local development only) the socket's own parameters are taken as they come.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from voxline.server.call_tokens import PARAM_TOKEN, CallTokenError, CallTokens
from voxline.settings import Settings
from voxline.store.base import PlatformStore, Store

log = structlog.get_logger("voxline.twilio.security")


@dataclass(frozen=True)
class CallFacts:
    """What a call is: the agent that answers, the listener that routed it, the remote party
    and our number."""

    agent: str | None
    listener: str | None
    caller: str
    number: str


class CallAdmission:
    def __init__(self, settings: Settings, store: Callable[[], Store]) -> None:
        """`store` gives the store once the server is open (routes are built before)."""
        self._tokens = CallTokens.from_settings(settings)
        self._required = settings.twilio_validate_signatures
        self._store = store

    def parameters(self, *, call_sid: str, facts: CallFacts) -> dict[str, str]:
        """The `<Parameter>` that carries the call token, for the TwiML (none when tokens
        cannot be minted: then sockets refuse every call anyway, see `admit`)."""
        if self._tokens is None or not call_sid:
            return {}
        token = self._tokens.mint(
            call_sid=call_sid,
            caller=facts.caller,
            number=facts.number,
            agent=facts.agent or "",
            listener=facts.listener,
        )
        return {PARAM_TOKEN: token}

    async def admit(
        self, call_sid: str, parameters: dict[str, str], unsigned: CallFacts
    ) -> CallFacts | None:
        """The facts of an admitted call, or None (logged) when it must be refused."""
        if not self._required:
            return unsigned  # local development: nothing is signed, nothing to check against
        reason = None
        facts = None
        if self._tokens is None:
            reason = "no key to check call tokens (TWILIO_AUTH_TOKEN is not set)"
        else:
            try:
                claims = self._tokens.verify(parameters.get(PARAM_TOKEN), call_sid)
            except CallTokenError as exc:
                reason = str(exc)
            else:
                facts = CallFacts(
                    claims.agent or None, claims.listener, claims.caller, claims.number
                )
                if not await self._first_use(call_sid, self._tokens.ttl):
                    reason, facts = "call token already used for this CallSid", None
        if facts is None:
            log.warning("call socket refused", reason=reason, call_sid=call_sid[:64])
        return facts

    async def _first_use(self, call_sid: str, ttl: float) -> bool:
        store = self._store()
        if not isinstance(store, PlatformStore):
            return True  # a store without single-use keys: the token's expiry still bounds it
        return await store.use_once(f"call:{call_sid}", ttl)
