"""How stateless workers ask each other for things through the `EventBroker`.

Each worker listens on its own inbox and on one broadcast channel. A request is broadcast (or
sent to a known inbox) with `reply_to` and `request_id`; whoever can act on it answers into the
requester's inbox, and the first answer resolves the waiting future. Two things need this: text
for a call that is live on some other worker, and a client tool's result that arrived on a feed
socket held by a different worker than the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog

from voxline.conversation.turns import new_id
from voxline.store.base import EventBroker

log = structlog.get_logger("voxline.server.cluster")

BROADCAST = "control"
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


def inbox_of(worker_id: str) -> str:
    return f"worker:{worker_id}"


class WorkerLink:
    def __init__(self, broker: EventBroker) -> None:
        self.broker = broker
        self.worker_id = new_id("worker")
        self.inbox = inbox_of(self.worker_id)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, Handler] = {}
        self._subscriptions: list[AsyncIterator[dict[str, Any]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        """Subscribe (in effect on return, as brokers promise) and start serving."""
        for channel, consume in ((self.inbox, self._answer), (BROADCAST, self._serve)):
            subscription = self.broker.subscribe(channel)
            self._subscriptions.append(subscription)
            self._spawn(self._pump(channel, subscription, consume))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
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
        seconds."""
        request_id, future = self.expect()
        try:
            message = {**payload, "type": kind, "request_id": request_id, "reply_to": self.inbox}
            await self.broker.publish(BROADCAST, message)
            async with asyncio.timeout(patience):
                return await future
        except TimeoutError:
            return None
        finally:
            self.forget(request_id)

    async def reply(self, reply_to: str, request_id: str, payload: dict[str, Any]) -> None:
        await self.broker.publish(reply_to, {**payload, "request_id": request_id})

    async def _pump(
        self,
        channel: str,
        subscription: AsyncIterator[dict[str, Any]],
        consume: Callable[[dict[str, Any]], None],
    ) -> None:
        async for message in subscription:
            consume(message)
        log.error("broker subscription ended; cross-worker requests stop", channel=channel)

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
            await self.reply(reply_to, request_id, answer)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("cross-worker request failed", exc_info=exc)


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
