"""The live debug feed: what each conversation does, as JSON events on the `EventBroker`.

Every live conversation on a worker has one `FeedPublisher`. It listens to the event bus of each
of the conversation's live sessions (two calls from one number are two sessions; each event says
which `connection` it came from), turns events into small JSON objects and publishes them, in
order, to the call's channel and to the channel of each listener the conversation is currently
serving. Feed sockets (on any
worker) subscribe to those channels. Publishing goes through one bounded queue and one task per
conversation, because bus handlers are synchronous and must not wait on the network, and because
events published from separate tasks could overtake each other.

The feed is for the people debugging an agent, so it carries content unredacted; it is never
logged. `Feeds` also carries client tool calls to feed clients and their answers back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from typing import Any

import structlog

from voxline.conversation.session import Session
from voxline.conversation.turns import BotTurn, DtmfTurn, SystemTurn, UserTurn
from voxline.guardrails.storage import TextMask, mask_feed_event, text_mask
from voxline.providers.llm.base import ToolCallRequest
from voxline.server.cluster import WorkerLink, wait_answer
from voxline.store.base import ApprovalRecord, EventBroker
from voxline.tools.base import ToolOutcome
from voxline.tools.client import ClientToolCall, ClientToolError

log = structlog.get_logger("voxline.server.feed")

QUEUE_LIMIT = 2000  # events a conversation may get ahead of the broker before some are dropped
CLOSE_TIMEOUT = 5.0  # seconds a finished conversation's last events may take to publish
CLIENT_TOOL_CALL = "client_tool_call"


def listener_channel(listener_id: str) -> str:
    return f"feed:listener:{listener_id}"


def call_channel(conversation_id: str) -> str:
    return f"feed:call:{conversation_id}"


def describe(
    event: str, payload: dict[str, Any], mask: TextMask | None = None
) -> dict[str, Any] | None:
    """A session bus event as a feed event (type and fields), or None for bus noise. `mask`:
    what each text field (what someone said, tool arguments and results) goes through, for
    agents that keep personal data out of their feeds (`guardrails.redact_stored_pii`)."""
    described = _describe(event, payload)
    return mask_feed_event(described, mask) if described and mask else described


def _describe(event: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    if event == "turn_added":
        turn = payload["turn"]
        if isinstance(turn, UserTurn):
            return {"type": "user_utterance", "text": turn.content, "final": True}
        if isinstance(turn, DtmfTurn):
            return {"type": "dtmf", "digits": turn.digits}
        if isinstance(turn, SystemTurn) and not turn.summary:
            return {"type": "system_note", "text": turn.content}
        return None
    if event == "bot_text_delta":
        return {"type": "bot_text", "delta": payload["delta"], "turn_id": payload["turn"].id}
    if event == "reply_started":
        return {"type": "reply_started"}
    if event == "reply_finished":
        turn = payload["turn"]
        return {"type": "reply_finished", "text": turn.content if turn is not None else None}
    if event == "interrupted":
        cut = payload["turn"]
        return {"type": "interrupted", "heard": cut.content if isinstance(cut, BotTurn) else None}
    if event == "tool_started":
        call: ToolCallRequest = payload["call"]
        return {
            "type": "tool_call",
            "tool_call_id": call.id,
            "name": call.name,
            "arguments": _arguments(call),
        }
    if event == "tool_finished":
        done: ToolCallRequest = payload["call"]
        outcome: ToolOutcome = payload["outcome"]
        return {
            "type": "tool_result",
            "tool_call_id": done.id,
            "name": done.name,
            "content": outcome.content,
            "is_error": outcome.is_error,
            "duration": round(outcome.duration, 4),
            "attempts": outcome.attempts,
        }
    if event == "approval_requested":
        return {
            "type": "approval_requested",
            "approval_id": payload["approval_id"],
            "name": payload["call"].name,
        }
    if event == "approval_resolved":
        approval: ApprovalRecord = payload["approval"]
        return {"type": "approval_resolved", "approval_id": approval.id, "status": approval.status}
    if event == "state_changed":
        return {
            "type": "state",
            "from": str(payload["old"]),
            "to": str(payload["new"]),
            "duration": round(payload["duration"], 4),
        }
    if event == "metrics":
        metrics = payload["metrics"]
        fields = (
            dataclasses.asdict(metrics)
            if dataclasses.is_dataclass(metrics) and not isinstance(metrics, type)
            else {}
        )
        return {"type": "metrics", "kind": payload["kind"], **fields}
    if event == "error":
        # Content stays unredacted on the feed, but an error message can carry a provider URL
        # with its credentials or a key a server echoed back: those never leave.
        from voxline.guardrails.redact import redact_secrets

        error = payload["error"]
        message = redact_secrets(str(error) or repr(error))
        return {"type": "error", "where": payload["where"], "message": message}
    if event == "summary_created":
        return {"type": "summary", "replaced": len(payload["replaced"])}
    if event == "guardrail_tripped":
        entry = payload["trip"].annotation(payload["stage"], late=payload["late"])
        return {"type": "guardrail", "turn_id": payload["turn"].id, **entry}
    if event == "session_started":
        return {"type": "session_started", "resumed": payload["resumed"]}
    if event == "session_closed":
        return {"type": "session_closed"}
    return None


def _arguments(call: ToolCallRequest) -> Any:
    try:
        return call.parsed_arguments()
    except ValueError:
        return call.arguments


class FeedPublisher:
    def __init__(self, broker: EventBroker, conversation_id: str, agent: str) -> None:
        self.broker = broker
        self.conversation_id = conversation_id
        self.agent = agent
        self.dropped = 0  # events refused by the full queue
        self.unpublished = 0  # events the broker did not take (an outage)
        self._listeners: dict[str, int] = {}  # listener id -> leases serving it
        self._seq = 0
        self._queue: asyncio.Queue[tuple[tuple[str, ...], dict[str, Any]]] = asyncio.Queue(
            QUEUE_LIMIT
        )
        self._pump = asyncio.create_task(self._publish_all())
        self._sessions: dict[str, Any] = {}  # connection id -> unsubscribe

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def attach(self, session: Session) -> None:
        connection = session.connection_id
        mask = text_mask(session.spec.guardrails)

        def on_bus(event: str, **payload: Any) -> None:
            described = describe(event, payload, mask)
            if described is not None:
                self.publish(described.pop("type"), connection=connection, **described)

        self._sessions[connection] = session.on("*", on_bus)

    def detach(self, session: Session) -> None:
        unsubscribe = self._sessions.pop(session.connection_id, None)
        if unsubscribe is not None:
            unsubscribe()

    def add_listener(self, listener_id: str) -> None:
        self._listeners[listener_id] = self._listeners.get(listener_id, 0) + 1

    def remove_listener(self, listener_id: str) -> None:
        left = self._listeners.get(listener_id, 0) - 1
        if left > 0:
            self._listeners[listener_id] = left
        else:
            self._listeners.pop(listener_id, None)

    def publish(self, event_type: str, /, **fields: Any) -> None:
        """Queue one event for the call's channel and the listeners' channels as they are now."""
        self._seq += 1
        event = {
            "type": event_type,
            "call_id": self.conversation_id,
            "agent": self.agent,
            "seq": self._seq,
            "at": time.time(),
            **fields,
        }
        channels = (call_channel(self.conversation_id), *map(listener_channel, self._listeners))
        try:
            self._queue.put_nowait((channels, event))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("debug feed is behind: events dropped", dropped=self.dropped)

    async def _publish_all(self) -> None:
        while True:
            channels, event = await self._queue.get()
            try:
                payload = json.loads(json.dumps(event, default=str))  # JSON-safe, whatever fed it
                for channel in channels:
                    await self.broker.publish(channel, payload)
            except Exception as exc:
                # Counted, and said once per outage: a broker outage must not flood the log.
                self.unpublished += 1
                if self.unpublished == 1 or self.unpublished % 100 == 0:
                    log.warning(
                        "debug feed events not published",
                        error=type(exc).__name__,
                        unpublished=self.unpublished,
                    )
            finally:
                self._queue.task_done()

    async def close(self) -> None:
        """Detach, publish what is queued (within `CLOSE_TIMEOUT`), stop."""
        for unsubscribe in self._sessions.values():
            unsubscribe()
        self._sessions.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._queue.join()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


class Feeds:
    """The feed publishers of this worker's live conversations, and the client tool transport
    their sessions use (it asks through the feed and waits for the answer in our inbox)."""

    def __init__(self, broker: EventBroker, link: WorkerLink) -> None:
        self.broker = broker
        self.link = link
        self._publishers: dict[str, FeedPublisher] = {}

    def start(self, session: Session, agent: str) -> FeedPublisher:
        """Publish `session`'s events on its conversation's feed (started with the first)."""
        publisher = self._publishers.get(session.id)
        if publisher is None:
            publisher = FeedPublisher(self.broker, session.id, agent)
            self._publishers[session.id] = publisher
        publisher.attach(session)
        return publisher

    def get(self, conversation_id: str) -> FeedPublisher | None:
        return self._publishers.get(conversation_id)

    async def finish(self, session: Session) -> None:
        """Stop publishing `session`'s events; the feed ends with the conversation's last."""
        publisher = self._publishers.get(session.id)
        if publisher is None:
            return
        publisher.detach(session)
        if publisher.sessions == 0:
            del self._publishers[session.id]
            await publisher.close()

    async def close(self) -> None:
        for publisher in list(self._publishers.values()):
            await publisher.close()
        self._publishers.clear()

    async def call_client_tool(self, call: ClientToolCall) -> Any:
        publisher = self._publishers.get(call.conversation_id)
        if publisher is None:
            raise ClientToolError("this conversation has no debug feed on this worker")
        request_id, answer = self.link.expect()
        publisher.publish(
            CLIENT_TOOL_CALL,
            request_id=request_id,
            reply_to=self.link.inbox,
            tool_call_id=call.call_id,
            name=call.name,
            arguments=call.arguments,
        )
        reply = await wait_answer(self.link, request_id, answer)
        if reply.get("error") is not None:
            raise ClientToolError(str(reply["error"]))
        return reply.get("result")
