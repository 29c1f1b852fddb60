"""`EventBroker`s: fan-out of JSON events (debug feeds) within one process or across workers.

Both brokers hand each subscriber its own bounded queue, so a slow feed client can never hold up
a call: when its queue is full the oldest event is dropped (a feed that fell behind should show
what is happening now) and counted in `Subscription.dropped` and the broker's `dropped`.

Messages are JSON-encoded once at publish time, in process too, so a message that could not
cross Redis fails the same way everywhere, and every subscriber decodes its own copy that no
other subscriber can mutate.

`RedisBroker` listens with one pattern subscription per broker, opened before `open()` returns.
A `subscribe()` is therefore in effect the moment it returns (no handshake to wait for), at the
cost of every worker receiving every event and discarding those nobody local listens to: right
for debug feeds across tens of workers; per-channel SUBSCRIBE would be the step beyond that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from voxline.store.errors import BrokerConnectionError

DEFAULT_QUEUE_SIZE = 1000

_END = object()  # queued after the last message of a subscription that has ended


class Subscription(AsyncIterator[dict[str, Any]]):
    """One subscriber's messages on one channel, in publish order, until closed.

    Iteration stops after `aclose()` or the broker's `close()`; it raises
    `BrokerConnectionError` (after the messages that did arrive) when the broker lost its server
    for good. Close it when done, e.g. `async with contextlib.aclosing(broker.subscribe(c))`.
    """

    def __init__(
        self,
        channel: str,
        size: int,
        on_drop: Callable[[], None],
        on_close: Callable[[Subscription], None],
    ) -> None:
        self.channel = channel
        self.dropped = 0
        self._queue: asyncio.Queue[str | object] = asyncio.Queue(maxsize=size)
        self._on_drop = on_drop
        self._on_close = on_close
        self._error: BaseException | None = None
        self._ended = False

    def _put(self, item: str | object) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            self._on_drop()
        self._queue.put_nowait(item)

    def deliver(self, payload: str) -> None:
        if not self._ended:
            self._put(payload)

    def end(self, error: BaseException | None = None) -> None:
        """No more messages after those already queued; then stop, or raise `error`."""
        if not self._ended:
            self._ended = True
            self._error = error
            self._put(_END)

    async def __anext__(self) -> dict[str, Any]:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # every later call stops too
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        assert isinstance(item, str)
        message: dict[str, Any] = json.loads(item)
        return message

    async def aclose(self) -> None:
        """Stop receiving: messages still queued are discarded."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self.end()
        self._on_close(self)


class _Fanout:
    """Channel -> local subscriptions; what both brokers share."""

    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self._channels: dict[str, set[Subscription]] = {}
        self.dropped = 0

    def _count_drop(self) -> None:
        self.dropped += 1

    def add(self, channel: str) -> Subscription:
        subscription = Subscription(channel, self._queue_size, self._count_drop, self._remove)
        self._channels.setdefault(channel, set()).add(subscription)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        members = self._channels.get(subscription.channel, set())
        members.discard(subscription)
        if not members:
            self._channels.pop(subscription.channel, None)

    def deliver(self, channel: str, payload: str) -> None:
        for subscription in self._channels.get(channel, ()):
            subscription.deliver(payload)

    def end_all(self, error: BaseException | None = None) -> None:
        for members in self._channels.values():
            for subscription in members:
                subscription.end(error)
        self._channels.clear()


def _encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class InProcessBroker:
    """Events within this process only: the default when no Redis is configured."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._fanout = _Fanout(queue_size)
        self._closed = False

    @property
    def dropped(self) -> int:
        """Events lost to full subscriber queues since the start."""
        return self._fanout.dropped

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        if self._closed:
            raise RuntimeError("the broker is closed")
        self._fanout.deliver(channel, _encode(message))

    def subscribe(self, channel: str) -> Subscription:
        if self._closed:
            raise RuntimeError("the broker is closed")
        return self._fanout.add(channel)

    async def close(self) -> None:
        """End every subscription (after what it has already queued)."""
        self._closed = True
        self._fanout.end_all()


class RedisBroker:
    """Events between workers through Redis pub/sub; channels live under `prefix` + "events:".

    Pub/sub delivers only to those connected at the time: after a lost connection the broker
    reconnects (`reconnect_attempts` tries, backing off from `reconnect_delay` seconds) and
    events published meanwhile are lost; if every try fails, subscriptions end with a
    `BrokerConnectionError`.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "voxline:",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        reconnect_attempts: int = 5,
        reconnect_delay: float = 0.1,
    ) -> None:
        self._url = url
        self._channel_prefix = prefix + "events:"
        self._fanout = _Fanout(queue_size)
        self._reconnect_attempts = reconnect_attempts
        self._reconnect_delay = reconnect_delay
        self._client: Redis | None = None
        self._reader: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RedisBroker(prefix={self._channel_prefix!r})"  # the URL may carry a password

    @property
    def dropped(self) -> int:
        """Events lost to full subscriber queues since the start."""
        return self._fanout.dropped

    async def open(self) -> None:
        """Connect and start listening; returns once events published from now on arrive."""
        if self._client is not None:
            return
        # No retries inside redis-py: reconnecting is this broker's policy, stated above.
        client = Redis.from_url(self._url, decode_responses=True, retry=Retry(NoBackoff(), 0))
        listening: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._client = client
        self._reader = asyncio.create_task(self._listen(client, listening))
        try:
            await listening
        except BaseException:
            await self.close()
            raise

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        payload = _encode(message)
        try:
            await self._require_client().publish(self._channel_prefix + channel, payload)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise BrokerConnectionError(f"cannot publish to Redis: {exc}") from exc

    def subscribe(self, channel: str) -> Subscription:
        self._require_client()
        return self._fanout.add(channel)

    def _require_client(self) -> Redis:
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open; await broker.open() first")
        return self._client

    async def close(self) -> None:
        """Stop listening and end every subscription (after what it has already queued)."""
        client, self._client = self._client, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if client is not None:
            await client.aclose()
        self._fanout.end_all()

    async def _listen(self, client: Redis, listening: asyncio.Future[None]) -> None:
        """Read the pattern subscription for good, reconnecting after a lost connection."""
        failures = 0
        while True:
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(self._channel_prefix + "*")
                if not listening.done():
                    listening.set_result(None)
                failures = 0
                async for message in pubsub.listen():
                    if message["type"] == "pmessage":
                        channel = message["channel"][len(self._channel_prefix) :]
                        self._fanout.deliver(channel, message["data"])
            except (RedisConnectionError, RedisTimeoutError) as exc:
                failures += 1
                if failures > self._reconnect_attempts or not listening.done():
                    error = BrokerConnectionError(f"lost the connection to Redis: {exc}")
                    if not listening.done():
                        listening.set_exception(error)
                    self._fanout.end_all(error)
                    return
                await asyncio.sleep(self._reconnect_delay * 2 ** (failures - 1))
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
