"""Prometheus metrics from the events a live session already emits.

`SessionMetrics` is a session observer (`LiveSessions.observers`): called with each session as
it opens, it subscribes to a handful of bus events and returns the function that unsubscribes.
It never subscribes to per-token events (`bot_text_delta`, `turn_updated`), and each handler is
a couple of increments on labelled children resolved once per session, so the reply path pays a
few microseconds per turn, not per token. Handlers never raise: the bus logs and skips a
failing handler anyway, but a metric has no business producing log noise either.

Drop counts (debug feed queue, broker subscribers) are cumulative attributes on long-lived
objects; they are turned into counter increments by difference whenever a reply finishes, a
session closes or `/metrics` is scraped.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any

import structlog

from voxline.conversation.session import Session
from voxline.conversation.turns import UserTurn
from voxline.providers.llm.base import ToolCallRequest
from voxline.server.feed import Feeds
from voxline.store.base import ApprovalRecord, EventBroker
from voxline.telemetry import labels, metrics
from voxline.telemetry.outcomes import outcome_kind
from voxline.tools.base import ToolOutcome
from voxline.voice.metrics import TurnLatency

log = structlog.get_logger("voxline.telemetry")


class DropCounter:
    """Turns cumulative drop counts on long-lived objects into counter increments: what was
    seen per (object, source) is remembered weakly, so a finished feed is simply forgotten."""

    def __init__(self) -> None:
        self._seen: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()

    def update(self, source: str, owner: Any, total: int) -> None:
        seen = self._seen.setdefault(owner, {})
        before = seen.get(source, 0)
        if total > before:
            metrics.get().dropped.labels(source).inc(total - before)
            seen[source] = total


class SessionMetrics:
    """Counts what sessions do; one per app (see `server/metrics_routes.py`)."""

    def __init__(self, feeds: Feeds | None = None, broker: EventBroker | None = None) -> None:
        self._feeds = feeds
        self._broker = broker
        self._drops = DropCounter()

    def __call__(self, session: Session) -> Callable[[], None]:
        try:
            return _Watch(self, session).detach
        except Exception:  # a session opens whether or not it can be counted
            log.exception("session metrics not attached")
            return _nothing

    def sync_drops(self, conversation_id: str | None = None) -> None:
        """Bring the drop counters up to date (the broker's, and one conversation's feed)."""
        broker = self._broker
        if broker is not None:
            self._drops.update("broker", broker, int(getattr(broker, "dropped", 0)))
        publisher = (
            self._feeds.get(conversation_id)
            if self._feeds is not None and conversation_id is not None
            else None
        )
        if publisher is not None:
            self._drops.update("feed", publisher, publisher.dropped)
            self._drops.update("feed_unpublished", publisher, publisher.unpublished)


def _nothing() -> None:
    return None


class _Watch:
    """One session's subscriptions and its labelled children, resolved once."""

    def __init__(self, owner: SessionMetrics, session: Session) -> None:
        m = metrics.get()
        self.owner = owner
        self.session = session
        self.agent = labels.agents(session.spec.name)
        self.channel = labels.channels(session.channel)
        pair = (self.agent, self.channel)
        self.m = m
        self.live = m.sessions_live.labels(*pair)
        self.turns = m.turns.labels(*pair)
        self.voice_to_voice = m.voice_to_voice.labels(*pair)
        self.end_of_turn = m.end_of_turn.labels(*pair)
        self.stt = m.stt_latency.labels(*pair)
        self.tts = m.tts_first_audio.labels(*pair)
        self.live.inc()
        m.sessions.labels(*pair).inc()
        self._attached = True
        self._offs = [
            session.on("turn_added", self.on_turn_added),
            session.on("reply_finished", self.on_reply_finished),
            session.on("interrupted", self.on_interrupted),
            session.on("barge_in_resumed", self.on_barge_in_resumed),
            session.on("tool_finished", self.on_tool_finished),
            session.on("approval_requested", self.on_approval_requested),
            session.on("approval_resolved", self.on_approval_resolved),
            session.on("metrics", self.on_metrics),
            session.on("error", self.on_error),
        ]

    def detach(self) -> None:
        if not self._attached:
            return
        self._attached = False
        for off in self._offs:
            off()
        self.live.dec()
        self._guard(self.owner.sync_drops, self.session.id)

    @staticmethod
    def _guard(action: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(Exception):  # a metric must never break a conversation
            action(*args)

    # -- handlers ------------------------------------------------------------------------
    def on_turn_added(self, turn: object, **_: Any) -> None:
        if isinstance(turn, UserTurn):
            self.turns.inc()

    def on_reply_finished(self, **_: Any) -> None:
        self._reply("finished")
        self._guard(self.owner.sync_drops, self.session.id)

    def on_interrupted(self, **_: Any) -> None:
        self._reply("interrupted")
        self.m.interruptions.labels(self.agent, self.channel, "committed").inc()

    def on_barge_in_resumed(self, **_: Any) -> None:
        """Speech over the bot judged a backchannel or noise: the bot went on."""
        self.m.interruptions.labels(self.agent, self.channel, "resumed").inc()

    def _reply(self, outcome: str) -> None:
        self.m.replies.labels(self.agent, self.channel, outcome).inc()

    def on_tool_finished(self, call: ToolCallRequest, outcome: ToolOutcome, **_: Any) -> None:
        kind = outcome_kind(outcome)
        tool = "unknown" if kind == "unknown_tool" else labels.tools(call.name)
        self.m.tool_calls.labels(self.agent, tool, kind).inc()
        if outcome.attempts:
            self.m.tool_duration.labels(tool).observe(outcome.duration)

    def on_approval_requested(self, call: ToolCallRequest, **_: Any) -> None:
        self.m.approvals_requested.labels(self.agent, labels.tools(call.name)).inc()

    def on_approval_resolved(self, approval: ApprovalRecord, **_: Any) -> None:
        self.m.approvals_resolved.labels(self.agent, str(approval.status)).inc()

    def on_error(self, where: str = "unknown", **_: Any) -> None:
        self.m.errors.labels(self.agent, self.channel, labels.places(where)).inc()
        if where == "reply":
            self._reply("failed")

    def on_metrics(self, kind: str, metrics: Any, **_: Any) -> None:
        if kind == "llm":
            self._llm(metrics)
        elif kind == "turn" and isinstance(metrics, TurnLatency):
            self._voice(metrics)

    def _llm(self, step: Any) -> None:
        provider = labels.providers(step.label)
        if step.ttft is not None:
            self.m.llm_ttft.labels(self.agent, provider).observe(step.ttft)
        self.m.llm_duration.labels(self.agent, provider).observe(step.duration)
        if step.prompt_tokens:
            self.m.llm_tokens.labels(provider, "input").inc(step.prompt_tokens)
        if step.completion_tokens:
            self.m.llm_tokens.labels(provider, "output").inc(step.completion_tokens)

    def _voice(self, turn: TurnLatency) -> None:
        if turn.voice_to_voice is not None:
            self.voice_to_voice.observe(turn.voice_to_voice)
        if turn.end_of_turn is not None:
            self.end_of_turn.observe(turn.end_of_turn)
        if turn.transcript is not None:
            self.stt.observe(max(0.0, turn.transcript - (turn.end_of_turn or 0.0)))
        if turn.first_audio is not None and turn.llm_first_token is not None:
            self.tts.observe(max(0.0, turn.first_audio - turn.llm_first_token))
