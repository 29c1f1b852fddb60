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
The same single pattern is what makes healing cheap: re-subscribing it after an outage brings
every local subscription back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from voxline.store.errors import BrokerConnectionError
from voxline.telemetry import counters

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "BrokerUnavailableError",
    "InProcessBroker",
    "RedisBroker",
    "Subscription",
]

log = structlog.get_logger("voxline.store.brokers")

DEFAULT_QUEUE_SIZE = 1000

_END = object()  # queued after the last message of a subscription that has ended


class BrokerUnavailableError(BrokerConnectionError):
    """The broker's server cannot be reached right now; the message says since when and why.

    Raised by `publish` at once while the broker knows its server is gone, so a caller (an API
    request, a cross-worker question) fails in milliseconds with a reason instead of hanging.
    It is a `ConnectionError`, so code that already treats those as transient keeps working.
    """


class Subscription(AsyncIterator[dict[str, Any]]):
    """One subscriber's messages on one channel, in publish order, until closed.

    Iteration stops only after `aclose()` or the broker's `close()`: a broker that loses its
    server keeps the subscription and resumes delivery once it is back (events published in
    between are lost, as pub/sub always loses what nobody could hear). Close it when done, e.g.
    `async with contextlib.aclosing(broker.subscribe(c))`.
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
        self.undecodable = 0
        self._queue: asyncio.Queue[str | object] = asyncio.Queue(maxsize=size)
        self._on_drop = on_drop
        self._on_close = on_close
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

    def end(self) -> None:
        """No more messages after those already queued; then stop."""
        if not self._ended:
            self._ended = True
            self._put(_END)

    async def __anext__(self) -> dict[str, Any]:
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # every later call stops too
                raise StopAsyncIteration
            assert isinstance(item, str)
            try:
                message = json.loads(item)
            except json.JSONDecodeError:
                message = None
            if isinstance(message, dict):
                return message
            # Only something else writing under our Redis prefix sends this; it must not end
            # (or break) the consumer, so it is skipped and counted.
            self.undecodable += 1
            if self.undecodable == 1:
                log.warning("broker message is not a JSON object; skipped", channel=self.channel)

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

    def end_all(self) -> None:
        for members in self._channels.values():
            for subscription in members:
                subscription.end()
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

    @property
    def healthy(self) -> bool:
        """Always: there is no server to lose."""
        return True

    @property
    def problem(self) -> str | None:
        return None

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


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class RedisBroker:
    """Events between workers through Redis pub/sub; channels live under `prefix` + "events:".

    A lost connection never ends a subscription. The broker reconnects for as long as it is
    open, waiting `reconnect_delay` seconds after the first failure and doubling up to
    `reconnect_max_delay` (with jitter, so a fleet of workers does not stampede a Redis that
    just came back), then subscribes its pattern again. Pub/sub delivers only to those connected
    at the time, so events published during the outage are lost.

    While the server is gone `healthy` is False, `problem` says since when and why, and
    `publish` raises `BrokerUnavailableError` at once; a publish that gets no answer within
    `publish_timeout` seconds raises it too. Only the first connection, in `open()`, is not
    retried: a worker that cannot reach Redis at start should fail loudly, not serve half-deaf.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "voxline:",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 2.0,
        publish_timeout: float = 1.0,
        connect_timeout: float = 2.0,
        ping_interval: float = 5.0,
    ) -> None:
        self._url = url
        self._channel_prefix = prefix + "events:"
        self._fanout = _Fanout(queue_size)
        self._reconnect_delay = reconnect_delay
        self._reconnect_max_delay = reconnect_max_delay
        self._publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._client: Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        # Why the broker is unhealthy, and since when: the listener's view (is the pattern
        # subscribed?) and the publisher's (did the last publish fail?) are kept apart so that
        # one success does not hide the other's failure.
        self._listen_down: tuple[float, str] | None = None
        self._publish_down: tuple[float, str] | None = None
        self.reconnects = 0  # times the pattern subscription was restored after a loss

    def __repr__(self) -> str:
        return f"RedisBroker(prefix={self._channel_prefix!r})"  # the URL may carry a password

    @property
    def dropped(self) -> int:
        """Events lost to full subscriber queues since the start."""
        return self._fanout.dropped

    @property
    def healthy(self) -> bool:
        """Whether events published now reach every worker (open, subscribed, publishing)."""
        return self._client is not None and self.problem is None

    @property
    def problem(self) -> str | None:
        """Why the broker is not healthy, for /health and logs; None when it is."""
        if self._client is None:
            return "the Redis broker is not open"
        down = [d for d in (self._listen_down, self._publish_down) if d is not None]
        if not down:
            return None
        since, reason = min(down)
        return f"redis unreachable since {_clock(since)}: {reason}"

    async def open(self) -> None:
        """Connect and start listening; returns once events published from now on arrive."""
        if self._client is not None:
            return
        # No retries inside redis-py: reconnecting is this broker's policy, stated above.
        client = Redis.from_url(
            self._url,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self._connect_timeout,
        )
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
        client = self._require_client()
        if self._listen_down is not None:
            raise BrokerUnavailableError(f"cannot publish to Redis: {self.problem}")
        try:
            async with asyncio.timeout(self._publish_timeout):
                await client.publish(self._channel_prefix + channel, payload)
        except TimeoutError as exc:
            reason = f"no answer within {self._publish_timeout:g} s"
            self._publish_down = self._publish_down or (time.time(), reason)
            raise BrokerUnavailableError(f"cannot publish to Redis: {reason}") from exc
        except (RedisError, OSError) as exc:
            self._publish_down = self._publish_down or (time.time(), _reason(exc))
            raise BrokerUnavailableError(f"cannot publish to Redis: {_reason(exc)}") from exc
        self._publish_down = None

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

    def _backoff(self, failures: int) -> float:
        """Capped exponential delay before reconnect try `failures`, jittered down by up to
        half so that workers which lost Redis together do not all come back together."""
        delay = min(self._reconnect_max_delay, self._reconnect_delay * 2.0 ** min(failures - 1, 30))
        return delay * (0.5 + random.random() / 2)  # jitter, not a secret

    async def _listen(self, client: Redis, listening: asyncio.Future[None]) -> None:
        """Hold the pattern subscription for as long as the broker is open, reconnecting after
        every loss. Only `close()` (cancellation) ends this task once `open()` has returned."""
        failures = 0
        while True:
            pubsub = client.pubsub()
            try:
                await self._subscribe(pubsub)
                if not listening.done():
                    listening.set_result(None)
                if self._listen_down is not None:
                    self.reconnects += 1
                    counters.broker_reconnect("redis")
                    log.info(
                        "redis broker listening again",
                        down_for=round(time.time() - self._listen_down[0], 1),
                        attempts=failures,
                    )
                self._listen_down = None
                self._publish_down = None
                failures = 0
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not listening.done():
                    listening.set_exception(
                        BrokerUnavailableError(f"cannot reach Redis: {_reason(exc)}")
                    )
                    return
                failures += 1
                if self._listen_down is None:
                    self._listen_down = (time.time(), _reason(exc))
                    expected = isinstance(exc, RedisError | OSError)
                    log.warning(
                        "redis broker lost its connection; reconnecting",
                        error=_reason(exc),
                        exc_info=None if expected else exc,
                    )
                else:
                    self._listen_down = (self._listen_down[0], _reason(exc))
                await asyncio.sleep(self._backoff(failures))
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._connect_timeout):
                        await pubsub.aclose()

    async def _subscribe(self, pubsub: PubSub) -> None:
        """Subscribe the pattern and wait for Redis to confirm it: only then do events published
        from now on surely arrive, and a server that accepts connections but never answers (a
        frozen process) counts as down instead of as healed."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                await pubsub.psubscribe(self._channel_prefix + "*")
                while True:
                    message = await pubsub.get_message(timeout=self._connect_timeout)
                    if message is not None and message["type"] == "psubscribe":
                        return
        except TimeoutError as exc:
            raise BrokerUnavailableError(
                f"no answer within {self._connect_timeout:g} s to subscribing"
            ) from exc

    async def _read(self, pubsub: PubSub) -> None:
        """Deliver messages until the connection fails. A server that closes the socket fails
        the read at once; one that silently stops answering (a cut network) is caught by
        pinging when idle and giving up when not even the pong comes back."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self._ping_interval)
            now = loop.time()
            if message is not None:
                heard, pinged = now, False
                self._publish_down = None  # the server answers: a failed publish was transient
                if message["type"] == "pmessage":
                    channel = message["channel"][len(self._channel_prefix) :]
                    self._fanout.deliver(channel, message["data"])
            elif now - heard >= 2 * self._ping_interval and pinged:
                raise BrokerUnavailableError(
                    f"no answer from Redis for {now - heard:.0f} s (not even to a ping)"
                )
            elif now - heard >= self._ping_interval and not pinged:
                await pubsub.ping()
                pinged = True
