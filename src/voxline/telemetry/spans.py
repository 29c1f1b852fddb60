"""OpenTelemetry spans from the events a live session already emits.

`SessionTracer` is a session observer (`LiveSessions.observers`), like the metrics one: nothing
on the reply path creates, enters or passes a span. The tree it builds per session:

    call (one per live session: a phone call, a browser socket, an SMS exchange)
    └── turn (a caller's input → the bot's reply, ended by the reply, an interruption or an error)
        ├── chat MODEL     one per model request, GenAI attributes, time to first token
        ├── execute_tool NAME   one per tool call, outcome kind
        ├── stt            voice channels: end of turn decided → final transcript
        └── tts            voice channels: first model token → first synthesised audio

Model requests are reported (`metrics` event) when their stream ends, so their spans are
recorded after the fact with the measured start and end times; the same for STT/TTS, placed on
the wall clock from the moment the caller's turn was recorded (the voice pipeline measures its
stages from the end of the caller's speech on its own clock). A request cut short by a barge-in
reports nothing, so it has no span.

No transcript text, tool arguments or results, or error messages go on spans unless
`VOXLINE_TRACE_CONTENT=true`: traces usually leave the trust boundary the conversation store
sits in. Each call's and turn's trace id is also published on the conversation's debug feed
(event `trace`) and recorded for the log processor (`telemetry/trace_ids.py`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from voxline.conversation.session import Session
from voxline.conversation.turns import BotTurn, DtmfTurn, UserTurn
from voxline.providers.llm.base import ToolCallRequest
from voxline.server.feed import Feeds
from voxline.store.base import ApprovalRecord
from voxline.telemetry import labels, trace_ids
from voxline.telemetry.outcomes import outcome_kind
from voxline.tools.base import ToolOutcome
from voxline.voice.metrics import TurnLatency

log = structlog.get_logger("voxline.telemetry")

RECENT_TURNS = 8  # caller turns remembered per session, to place late voice latency reports
_S = 1_000_000_000  # nanoseconds per second


class SessionTracer:
    """Makes each session's span tree; one per app (see `server/metrics_routes.py`)."""

    def __init__(self, tracer: Tracer, *, content: bool = False, feeds: Feeds | None = None):
        self.tracer = tracer
        self.content = content
        self.feeds = feeds

    def __call__(self, session: Session) -> Callable[[], None]:
        try:
            return _CallTrace(self, session).detach
        except Exception:  # a session opens whether or not it can be traced
            log.exception("session tracing not attached")
            return lambda: None


class _CallTrace:
    def __init__(self, owner: SessionTracer, session: Session) -> None:
        self.owner = owner
        self.tracer = owner.tracer
        self.content = owner.content
        self.session = session
        self.connection = session.connection_id
        self.call = self.tracer.start_span(
            "call",
            kind=SpanKind.SERVER,
            attributes={
                "voxline.agent": session.spec.name,
                "voxline.channel": session.channel,
                "voxline.conversation.id": session.id,
                "voxline.connection.id": self.connection,
            },
        )
        self.call_context = trace.set_span_in_context(self.call)
        self.turn: Span | None = None
        self.turn_context: Context | None = None
        self.turns = 0
        self.recent: OrderedDict[str, tuple[Context, int]] = OrderedDict()  # turn id -> (ctx, ns)
        self.tools: dict[str, Span] = {}
        self._bind(self.call)
        self._publish("call", self.call)
        self._offs = [
            session.on(name, getattr(self, f"on_{name}"))
            for name in (
                "session_started",
                "turn_added",
                "reply_started",
                "reply_finished",
                "interrupted",
                "tool_started",
                "tool_finished",
                "approval_requested",
                "approval_resolved",
                "metrics",
                "error",
                "session_closed",
            )
        ]

    # -- lifecycle -------------------------------------------------------------------------
    def detach(self) -> None:
        for off in self._offs:
            off()
        self._offs = []
        self.on_session_closed()

    def on_session_closed(self, **_: Any) -> None:
        for call_id, span in list(self.tools.items()):
            span.set_attribute("voxline.tool.unfinished", True)
            span.end()
            trace_ids.unbind_tool_call(call_id)
        self.tools.clear()
        self._end_turn("closed")
        if self.call.is_recording():
            self.call.set_attribute("voxline.turns", self.turns)
            self.call.end()
        trace_ids.unbind_connection(self.connection, self.session.id)

    def on_session_started(self, resumed: bool = False, **_: Any) -> None:
        self.call.set_attribute("voxline.resumed", resumed)

    # -- turns -----------------------------------------------------------------------------
    def on_turn_added(self, turn: object, **_: Any) -> None:
        if isinstance(turn, UserTurn | DtmfTurn):
            self._start_turn(turn.id, "dtmf" if isinstance(turn, DtmfTurn) else "user")
            if self.content and self.turn is not None:
                text = turn.content if isinstance(turn, UserTurn) else turn.digits
                self.turn.set_attribute("voxline.user.text", text)

    def on_reply_started(self, **_: Any) -> None:
        if self.turn is None:  # a reply nobody typed: an approval's outcome, a tool's follow-up
            self._start_turn(None, "system")

    def on_reply_finished(self, turn: BotTurn | None = None, **_: Any) -> None:
        if self.content and self.turn is not None and turn is not None:
            self.turn.set_attribute("voxline.reply.text", turn.content)
        self._end_turn("finished")

    def on_interrupted(self, turn: BotTurn | None = None, **_: Any) -> None:
        if self.turn is not None:
            self.turn.add_event("interrupted")
            if self.content and turn is not None:
                self.turn.set_attribute("voxline.reply.heard", turn.content)
        self._end_turn("interrupted")

    def _start_turn(self, turn_id: str | None, trigger: str) -> None:
        self._end_turn("superseded")
        self.turns += 1
        attributes: dict[str, Any] = {"voxline.turn.index": self.turns, "voxline.trigger": trigger}
        if turn_id is not None:
            attributes["voxline.turn.id"] = turn_id
        span = self.tracer.start_span("turn", context=self.call_context, attributes=attributes)
        self.turn = span
        self.turn_context = trace.set_span_in_context(span)
        if turn_id is not None:
            self.recent[turn_id] = (self.turn_context, time.time_ns())
            while len(self.recent) > RECENT_TURNS:
                self.recent.popitem(last=False)
        self._bind(span)
        self._publish("turn", span, turn_id=turn_id)

    def _end_turn(self, outcome: str) -> None:
        span, self.turn, self.turn_context = self.turn, None, None
        if span is None:
            return
        span.set_attribute("voxline.reply.outcome", outcome)
        span.end()
        self._bind(self.call)

    def _parent(self) -> Context:
        return self.turn_context if self.turn_context is not None else self.call_context

    # -- model requests, tools -------------------------------------------------------------
    def on_metrics(self, kind: str, metrics: Any, **_: Any) -> None:
        if kind == "llm":
            self._llm(metrics)
        elif kind == "turn" and isinstance(metrics, TurnLatency):
            self._voice(metrics)

    def _llm(self, step: Any) -> None:
        end = time.time_ns()
        start = end - int(step.duration * _S)
        system, model = labels.provider_parts(step.label)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": system,
            "gen_ai.provider.name": system,
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": step.prompt_tokens,
            "gen_ai.usage.output_tokens": step.completion_tokens,
            "voxline.llm.label": step.label,
        }
        if step.ttft is not None:
            attributes["gen_ai.server.time_to_first_token"] = step.ttft
        span = self.tracer.start_span(
            f"chat {model}",
            context=self._parent(),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        if step.ttft is not None:
            span.add_event("gen_ai.first_token", timestamp=start + int(step.ttft * _S))
        span.end(end_time=end)

    def on_tool_started(self, call: ToolCallRequest, **_: Any) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.id,
        }
        if self.content:
            attributes["gen_ai.tool.call.arguments"] = call.arguments
        span = self.tracer.start_span(
            f"execute_tool {call.name}", context=self._parent(), attributes=attributes
        )
        self.tools[call.id] = span
        context = span.get_span_context()
        trace_ids.bind_tool_call(call.id, trace_ids.hex_ids(context.trace_id, context.span_id))

    def on_tool_finished(self, call: ToolCallRequest, outcome: ToolOutcome, **_: Any) -> None:
        span = self.tools.pop(call.id, None)
        trace_ids.unbind_tool_call(call.id)
        if span is None:  # recorded without running (the conversation was closing)
            self.on_tool_started(call)
            span = self.tools.pop(call.id)
            trace_ids.unbind_tool_call(call.id)
        kind = outcome_kind(outcome)
        span.set_attribute("voxline.tool.outcome", kind)
        span.set_attribute("voxline.tool.attempts", outcome.attempts)
        if self.content:
            span.set_attribute("gen_ai.tool.call.result", outcome.content)
        if outcome.is_error:
            span.set_status(Status(StatusCode.ERROR, kind))
        span.end()

    def on_approval_requested(self, approval_id: str, call: ToolCallRequest, **_: Any) -> None:
        span = self.tools.get(call.id)
        if span is not None:
            span.add_event("approval_requested", {"voxline.approval.id": approval_id})

    def on_approval_resolved(self, approval: ApprovalRecord, **_: Any) -> None:
        self.call.add_event(
            "approval_resolved",
            {"voxline.approval.id": approval.id, "voxline.approval.status": str(approval.status)},
        )

    def on_error(self, error: BaseException | None = None, where: str = "", **_: Any) -> None:
        span = self.turn if self.turn is not None else self.call
        kind = type(error).__name__ if error is not None else "error"
        event: dict[str, Any] = {"exception.type": kind, "voxline.where": where}
        if self.content and error is not None:
            event["exception.message"] = str(error)
        span.add_event("exception", event)
        span.set_status(Status(StatusCode.ERROR, f"{where}: {kind}"))
        if where == "reply":
            self._end_turn("failed")

    # -- voice -----------------------------------------------------------------------------
    def _voice(self, latency: TurnLatency) -> None:
        """STT and TTS spans of a caller turn, placed on the wall clock from when the turn was
        recorded (that is the moment its transcript was ready)."""
        known = self.recent.get(latency.turn_id or "")
        if known is None or latency.transcript is None:
            return
        parent, recorded = known
        speech_end = recorded - int(latency.transcript * _S)
        if latency.end_of_turn is not None:
            self._interval(
                "stt",
                parent,
                speech_end,
                (latency.end_of_turn, latency.transcript),
                {"voxline.end_of_turn_s": latency.end_of_turn},
            )
        if latency.llm_first_token is not None and latency.first_audio is not None:
            attributes: dict[str, Any] = {}
            if latency.voice_to_voice is not None:
                attributes["voxline.voice_to_voice_s"] = latency.voice_to_voice
            self._interval(
                "tts",
                parent,
                speech_end,
                (latency.llm_first_token, latency.first_audio),
                attributes,
            )

    def _interval(
        self,
        name: str,
        parent: Context,
        origin: int,
        offsets: tuple[float, float],
        attributes: dict[str, Any],
    ) -> None:
        start, end = (origin + int(offset * _S) for offset in offsets)
        span = self.tracer.start_span(name, context=parent, attributes=attributes, start_time=start)
        span.end(end_time=max(start, end))

    # -- ids for logs and the feed ---------------------------------------------------------
    def _bind(self, span: Span) -> None:
        context = span.get_span_context()
        ids = trace_ids.hex_ids(context.trace_id, context.span_id)
        trace_ids.bind_connection(self.connection, self.session.id, ids)

    def _publish(self, scope: str, span: Span, **fields: Any) -> None:
        feeds = self.owner.feeds
        publisher = feeds.get(self.session.id) if feeds is not None else None
        if publisher is None:
            return
        context = span.get_span_context()
        trace_id, span_id = trace_ids.hex_ids(context.trace_id, context.span_id)
        publisher.publish(
            "trace",
            connection=self.connection,
            scope=scope,
            trace_id=trace_id,
            span_id=span_id,
            **fields,
        )
