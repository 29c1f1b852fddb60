"""Operator endpoints: liveness, status (never a secret), and human approval of tool calls.

`/health` is what a load balancer and an operator look at first, so it must not say "ok" while
the worker cannot do its job: it reports `degraded` with the reasons while the event broker is
down (debug feeds, client tools and text injection cannot cross workers) or the store does not
answer a cheap read within `STORE_PING_TIMEOUT`. Degraded is still HTTP 200: the worker serves
calls it holds and should stay in rotation; only draining answers 503, to take it out.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voxline.guardrails.audit import record_decision
from voxline.guardrails.redact import redact_secrets, redact_value, safe_url
from voxline.server.api.auth import (
    APPROVALS_SCOPE,
    BOOTSTRAP_ID,
    SCOPES,
    ApiKeys,
    Principal,
    bearer_token,
)
from voxline.server.api.errors import failure_reason
from voxline.server.auth_throttle import AuthThrottle, client_address, throttle_for
from voxline.server.hub import ConversationHub
from voxline.store.base import ApprovalRecord, PlatformStore
from voxline.tools.approvals import ApprovalNotFoundError, ApprovalStateError

log = structlog.get_logger("voxline.server")

STORE_PING_TIMEOUT = 1.0  # seconds the store gets to answer the health check's read
STORE_PING_REUSE = 1.0  # seconds a ping's outcome answers further health checks
_PING_ID = "__health__"  # a conversation id nothing uses: reading it touches the database only


def package_version() -> str:
    try:
        return version("voxline")
    except PackageNotFoundError:
        return "unknown"


class AdminRoutes:
    def __init__(self, hub: ConversationHub, default_agent: str) -> None:
        self.hub = hub
        self.default_agent = default_agent
        self._api_key = hub.settings.api_key
        self._keys: ApiKeys | None = None  # made once the hub (and so its store) is open
        self._ping_lock = asyncio.Lock()
        self._last_ping: tuple[float, str | None] | None = None  # when, and the problem found

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/health", self.health),
            Route("/status", self.status),
            Route("/approvals", self.list_approvals),
            Route("/approvals/{approval_id}", self.decide, methods=["POST"]),
        ]

    async def health(self, request: Request) -> Response:
        if self.hub.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        problems = await self.problems()
        if problems:
            return JSONResponse({"status": "degraded", "problems": problems})
        return JSONResponse({"status": "ok"})

    async def problems(self) -> list[str]:
        """What keeps this worker from doing its whole job right now; empty when nothing."""
        found: list[str] = []
        try:
            link_problem = self.hub.link.problem
        except RuntimeError:  # the hub is not open (yet, or any more)
            link_problem = "the server is not open"
        if link_problem is not None:
            found.append(f"event broker: {link_problem}")
        if (store_problem := await self._store_problem()) is not None:
            found.append(f"store: {store_problem}")
        return [redact_secrets(problem) for problem in found]  # errors may quote a URL

    async def _store_problem(self) -> str | None:
        """Ping the store with a read of a row that never exists. One ping at a time, its
        outcome reused briefly, so a load balancer polling a dead database cannot pile up
        connections waiting on it."""
        async with self._ping_lock:
            now = time.monotonic()
            if self._last_ping is not None and now - self._last_ping[0] < STORE_PING_REUSE:
                return self._last_ping[1]
            problem: str | None = None
            try:
                async with asyncio.timeout(STORE_PING_TIMEOUT):
                    await self.hub.store.get_conversation(_PING_ID)
            except TimeoutError:
                problem = f"no answer within {STORE_PING_TIMEOUT:g} s"
            except Exception as exc:
                problem = f"unreachable: {failure_reason(exc)}"
            self._last_ping = (time.monotonic(), problem)
            return problem

    async def status(self, request: Request) -> Response:
        """What this worker hosts and how it is doing.

        With `VOXLINE_API_KEY` set, the agents, channels and providers are shown only to a
        request with a valid API key (the bootstrap key or any stored key): an agent list tells
        an attacker which tools and numbers to aim at. Without a key the answer is still 200
        with the counters and `draining`, which is all a liveness probe needs (the Kubernetes
        manifests probe `/status` without one). Every string is redacted of secrets on the way
        out: LLM specs name URLs, and a URL may carry `user:password@`."""
        stats = self.hub.stats()
        counters = {
            "version": package_version(),
            "live_conversations": stats.live_conversations,
            "active_calls": stats.active_calls,
            "draining": stats.draining,
        }
        if self._api_key is not None and not await self._may_see_status(request):
            return JSONResponse(
                {
                    **counters,
                    "detail": "send an API key (Authorization: Bearer) to see agents, "
                    "channels and providers",
                }
            )
        settings = self.hub.settings
        agents = [
            {
                "name": agent.name,
                "description": agent.spec.description,
                "llm": safe_url(agent.spec.llm or settings.llm),
                "tools": sorted(t.name for t in agent.runtime.tools()),
                "voice_transport": agent.twilio.transport,
                "default": agent.name == self.default_agent,
            }
            for agent in self.hub.agents.values()
        ]
        body = {
            "version": counters["version"],
            "agents": agents,
            "channels": {
                "twilio_voice": sorted({a.twilio.transport for a in self.hub.agents.values()}),
                "twilio_sms": True,
                "sms_sender": self.hub.sms_sender is not None,
                "signature_checks": settings.twilio_validate_signatures,
            },
            "providers": {"default_llm": safe_url(settings.llm)},
            "approvals_api": self._api_key is not None,
            "live_conversations": stats.live_conversations,
            "active_calls": stats.active_calls,
            "draining": stats.draining,
            "problems": await self.problems(),
        }
        return JSONResponse(redact_value(body, secrets_only=True))

    async def _may_see_status(self, request: Request) -> bool:
        if not request.headers.get("authorization"):
            return False  # a probe: no store lookup, so a database outage cannot fail it
        try:
            return await self._principal(request) is not None
        except Exception as exc:  # the store could not check a stored key: not this time
            log.warning("status could not check an API key", reason=failure_reason(exc))
            return False

    async def _authorized(self, request: Request) -> Response | None:
        """None when the Bearer key is the bootstrap key or a stored key with the approvals
        scope; otherwise the refusal to send. An address that keeps sending wrong keys gets
        429 before its key is looked at (the throttle is shared with the API)."""
        client = client_address(request, self.hub.settings)
        if (cooling := self._throttle.retry_after(client)) > 0:
            retry = max(1, math.ceil(cooling))
            log.warning("approvals API refused a request", reason="too many failed keys")
            return JSONResponse(
                {
                    "error": "too many failed authentication attempts from this address; "
                    f"retry in {retry}s"
                },
                status_code=429,
                headers={"Retry-After": str(retry)},
            )
        principal = await self._principal(request)
        if principal is not None and principal.may(APPROVALS_SCOPE):
            return None
        if principal is not None:
            log.warning("approvals API refused a request", reason="key without approvals scope")
            return JSONResponse(
                {"error": f"this API key lacks the {APPROVALS_SCOPE!r} scope"}, status_code=403
            )
        if self._api_key is None:  # as before scopes: no bootstrap key, no anonymous access
            return JSONResponse(
                {
                    "error": "the approvals API is off: set VOXLINE_API_KEY, or use a stored "
                    f"key with the {APPROVALS_SCOPE!r} scope"
                },
                status_code=403,
            )
        log.warning("approvals API refused a request", reason="bad or missing API key")
        return JSONResponse(
            {
                "error": "a valid API key is required: VOXLINE_API_KEY, or a stored key with "
                f"the {APPROVALS_SCOPE!r} scope"
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @property
    def _throttle(self) -> AuthThrottle:
        return throttle_for(self.hub, self.hub.settings)

    async def _principal(self, request: Request) -> Principal | None:
        """The Bearer key's principal; a wrong key counts against the client's address, and
        while that address cools down no key of it is checked (None)."""
        token = bearer_token(request.headers.get("authorization", ""))
        client = client_address(request, self.hub.settings)
        store = self.hub.store
        if not isinstance(store, PlatformStore):  # an embedding app's store keeps no keys
            bootstrap = self._api_key
            if not token or self._throttle.retry_after(client) > 0:
                return None
            if bootstrap and _same(token, bootstrap.get_secret_value()):
                return Principal(BOOTSTRAP_ID, "bootstrap (VOXLINE_API_KEY)", frozenset(SCOPES))
            self._throttle.failed(client)
            return None
        if self._keys is None or self._keys.store is not store:
            self._keys = ApiKeys(store, self._api_key, self._throttle)
        return await self._keys.authenticate(token, client=client)

    async def list_approvals(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        pending = await self.hub.approvals.list_pending()
        return JSONResponse({"approvals": [_approval_json(a) for a in pending]})

    async def decide(self, request: Request) -> Response:
        if (refusal := await self._authorized(request)) is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:
            body = None
        decision = body.get("decision") if isinstance(body, dict) else None
        reason = body.get("reason") if isinstance(body, dict) else None
        if decision not in ("approve", "reject") or not isinstance(reason, str | None):
            return JSONResponse(
                {"error": 'send JSON {"decision": "approve" | "reject", "reason": "..."}'},
                status_code=400,
            )
        approval_id = request.path_params["approval_id"]
        try:
            if decision == "approve":
                record = await self.hub.approvals.approve(approval_id)
            else:
                record = await self.hub.approvals.reject(approval_id, reason)
        except ApprovalNotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except ApprovalStateError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        self.hub.after_decision(record)
        await record_decision(self.hub.store, record, await self._principal(request))  # audit
        return JSONResponse(_approval_json(record))


def _approval_json(record: ApprovalRecord) -> dict[str, Any]:
    return record.model_dump(
        mode="json",
        include={
            "id",
            "conversation_id",
            "tool",
            "arguments",
            "subject",
            "status",
            "reason",
            "created_at",
            "decided_at",
        },
    )


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
