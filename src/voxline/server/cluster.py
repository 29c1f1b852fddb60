"""How stateless workers ask each other for things through the `EventBroker`.

Each worker listens on its own inbox and on one broadcast channel. A request is broadcast (or
sent to a known inbox) with `reply_to` and `request_id`; whoever can act on it answers into the
requester's inbox, and the first answer resolves the waiting future. Two things need this: text
for a call that is live on some other worker, and a client tool's result that arrived on a feed
socket held by a different worker than the call.

A broker outage must not make a worker deaf for good: the link's subscriptions are
`LiveSubscription`s, which subscribe again (with backoff, and a log line) if the broker ever
ends one while the link is open. While the broker is down, asking or answering raises
`ClusterUnavailableError` at once, which the API turns into a 503 with the reason.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog

from voxline.conversation.turns import new_id
from voxline.store.base import EventBroker
from voxline.tasks import TaskGroup

log = structlog.get_logger("voxline.server.cluster")

BROADCAST = "control"
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
RESUBSCRIBE_DELAY = 0.1  # seconds before reading a replaced subscription, doubling per failure
RESUBSCRIBE_MAX_DELAY = 2.0


class ClusterUnavailableError(ConnectionError):
    """Other workers cannot be reached right now (the broker is down); the message says why.

    A `ConnectionError`, so callers that already treat those as transient keep doing so."""


def inbox_of(worker_id: str) -> str:
    return f"worker:{worker_id}"


def broker_problem(broker: EventBroker) -> str | None:
    """Why `broker` cannot carry events now, or None; brokers without a health view (test
    doubles, older ones) count as healthy."""
    if getattr(broker, "healthy", True):
        return None
    problem = getattr(broker, "problem", None)
    return str(problem) if problem else "the event broker is down"


class LiveSubscription(AsyncIterator[dict[str, Any]]):
    """A broker subscription that ends only when it is closed or its broker is.

    Brokers promise that a lost connection never ends a subscription, but a consumer that goes
    quietly deaf is the worst failure a cluster can have, so this does not take the promise on
    trust: if the underlying subscription ends (or raises) anyway, it subscribes again at once,
    so nothing published from then on is missed, logs a warning, and waits a capped, growing
    delay before reading on, so a broker that keeps failing is not spun on. A `subscribe` that
    fails because the broker is closed ends the iteration: that is shutdown, not a hiccup.
    """

    def __init__(self, broker: EventBroker, channel: str) -> None:
        self.broker = broker
        self.channel = channel
        self.resubscribed = 0
        self._current: AsyncIterator[dict[str, Any]] = broker.subscribe(channel)
        self._closed = False
        self._failures = 0

    async def __anext__(self) -> dict[str, Any]:
        while not self._closed:
            try:
                message = await anext(self._current)
            except StopAsyncIteration:
                reason = "it ended"
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                self._failures = 0
                return message
            if self._closed:
                break
            await close_subscription(self._current)
            try:
                self._current = self.broker.subscribe(self.channel)
            except RuntimeError:  # the broker is closed: the end, not a hiccup
                break
            self._failures += 1
            self.resubscribed += 1
            delay = min(RESUBSCRIBE_MAX_DELAY, RESUBSCRIBE_DELAY * 2.0 ** (self._failures - 1))
            log.warning(
                "broker subscription ended unexpectedly; subscribed again",
                channel=self.channel,
                reason=reason,
                attempt=self._failures,
            )
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._closed = True
        await close_subscription(self._current)


class WorkerLink:
    """This worker's end of cross-worker messaging: its inbox, the broadcast channel it serves,
    and the requests it is waiting on."""

    def __init__(self, broker: EventBroker) -> None:
        self.broker = broker
        self.worker_id = new_id("worker")
        self.inbox = inbox_of(self.worker_id)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, Handler] = {}
        self._subscriptions: list[LiveSubscription] = []
        self._tasks = TaskGroup("worker link")
        self._pumps: list[asyncio.Task[Any]] = []
        self._closing = False

    async def open(self) -> None:
        """Subscribe (in effect on return, as brokers promise) and start serving."""
        for channel, consume in ((self.inbox, self._answer), (BROADCAST, self._serve)):
            subscription = LiveSubscription(self.broker, channel)
            self._subscriptions.append(subscription)
            self._pumps.append(self._spawn(self._pump(subscription, consume)))

    @property
    def problem(self) -> str | None:
        """Why other workers cannot be reached now, or None: for /health."""
        if problem := broker_problem(self.broker):
            return problem
        if not self._closing and any(pump.done() for pump in self._pumps):
            return "the worker link stopped listening to the broker"
        return None

    async def close(self) -> None:
        self._closing = True
        await self._tasks.close()
        for subscription in self._subscriptions:
            await close_subscription(subscription)
        for future in self._pending.values():
            future.cancel()

    def handle(self, kind: str, handler: Handler) -> None:
        """Serve broadcast requests of `kind`; a handler returns None when it is not the one
        to answer (the call is not live here), and the requester keeps waiting for another."""
        self._handlers[kind] = handler

    def expect(self) -> tuple[str, asyncio.Future[dict[str, Any]]]:
        """A request id and the future its answer (sent to our inbox) will resolve; the caller
        must `forget` it once done waiting."""
        request_id = new_id("req")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        return request_id, future

    def forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    async def request(
        self, kind: str, payload: dict[str, Any], patience: float
    ) -> dict[str, Any] | None:
        """Broadcast a request; the first answer, or None when nobody answers within `patience`
        seconds. Raises `ClusterUnavailableError` when the broker is down (then "nobody
        answered" would be a lie that a caller turns into "the call is not live")."""
        request_id, future = self.expect()
        try:
            message = {**payload, "type": kind, "request_id": request_id, "reply_to": self.inbox}
            await self._publish(BROADCAST, message)
            async with asyncio.timeout(patience):
                return await future
        except TimeoutError:
            if problem := broker_problem(self.broker):  # it went down while we waited
                raise ClusterUnavailableError(f"other workers are unreachable: {problem}") from None
            return None
        finally:
            self.forget(request_id)

    async def reply(self, reply_to: str, request_id: str, payload: dict[str, Any]) -> None:
        """Answer a request; `ClusterUnavailableError` when the broker is down."""
        await self._publish(reply_to, {**payload, "request_id": request_id})

    async def _publish(self, channel: str, message: dict[str, Any]) -> None:
        if problem := broker_problem(self.broker):
            raise ClusterUnavailableError(f"other workers are unreachable: {problem}")
        try:
            await self.broker.publish(channel, message)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:  # RuntimeError: closed
            raise ClusterUnavailableError(f"other workers are unreachable: {exc}") from exc

    async def _pump(
        self, subscription: LiveSubscription, consume: Callable[[dict[str, Any]], None]
    ) -> None:
        async for message in subscription:
            try:
                consume(message)
            except Exception:  # one bad message must not stop the worker listening
                log.exception("cross-worker message not handled", channel=subscription.channel)
        if not self._closing:
            log.error(
                "broker closed under the worker link; cross-worker requests stop",
                channel=subscription.channel,
            )

    def _answer(self, message: dict[str, Any]) -> None:
        future = self._pending.get(str(message.get("request_id", "")))
        if future is not None and not future.done():
            future.set_result(message)

    def _serve(self, message: dict[str, Any]) -> None:
        handler = self._handlers.get(str(message.get("type", "")))
        reply_to, request_id = message.get("reply_to"), message.get("request_id")
        if handler is None or not isinstance(reply_to, str) or not isinstance(request_id, str):
            return
        self._spawn(self._run(handler, message, reply_to, request_id))

    async def _run(
        self, handler: Handler, message: dict[str, Any], reply_to: str, request_id: str
    ) -> None:
        answer = await handler(message)
        if answer is not None:
            try:
                await self.reply(reply_to, request_id, answer)
            except ClusterUnavailableError as exc:  # the asker times out and says so
                log.warning("cross-worker answer not sent", error=str(exc))

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(work)


async def close_subscription(subscription: AsyncIterator[dict[str, Any]]) -> None:
    """Stop a broker subscription, for brokers whose subscriptions can be closed."""
    aclose = getattr(subscription, "aclose", None)
    if aclose is not None:
        await aclose()


async def wait_answer(
    link: WorkerLink, request_id: str, future: asyncio.Future[dict[str, Any]]
) -> dict[str, Any]:
    """Await an answer registered with `expect`, forgetting it however the wait ends."""
    try:
        return await future
    finally:
        link.forget(request_id)
        future.cancel()  # no-op once resolved
