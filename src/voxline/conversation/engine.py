"""One reply: stream the model, record what it says, run the tools it asks for, repeat.

The engine writes everything it learns into the TurnStore as it happens (a delta goes into the
bot turn the moment it arrives; a tool result is recorded the moment that tool finishes), so an
interruption never has to reconstruct anything: it cancels the task and trims what is there to
what the user actually received.

Tools are the exception to "an interruption cancels everything": a tool that has started may
already have booked or charged something, and throwing its result away makes the model try
again. So each tool runs as a task of a group that outlives the reply (the session's), the reply
only waits for it (shielded), and a cancelled reply leaves it running, bounded by the
executor's timeout, to record its real result. The next reply waits for such tools before it
asks the model anything, so the model always learns what happened.

Guardrails (`voxline.guardrails`, when the session passes them) sit at the two ends of a reply:
the newest caller turn is checked before the model sees it (a trip answers with the configured
response instead), an LLM classifier races the reply and stops it if it trips, and the model's
text passes through a stream filter before it enters the bot turn, so what the filter removes
is never stored, spoken or sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from voxline.conversation.context import build_messages
from voxline.conversation.filler import ToolFiller
from voxline.conversation.state import SessionState, StateMachine
from voxline.conversation.turns import BotTurn, ToolCallTurn, Turn, TurnStore, UserTurn
from voxline.events import EventBus
from voxline.guardrails.checks import Stage, Trip
from voxline.guardrails.input import InputVerdict
from voxline.guardrails.output import OutputFilter, Released
from voxline.guardrails.runner import Guardrails
from voxline.guardrails.turns import (
    HANDOFF_TOOL,
    annotate,
    caller_turn,
    handoff_call,
    latest_own_turn,
    record_trip,
)
from voxline.providers.llm.base import (
    LLM,
    ChatMessage,
    LLMRequest,
    TextDelta,
    ToolCallAccumulator,
    ToolCallDelta,
    ToolCallRequest,
    Usage,
)
from voxline.tasks import TaskGroup, TaskGroupClosedError
from voxline.text.joining import heard_lengths, separator
from voxline.tools.base import RunContext, Tool, ToolOutcome
from voxline.tools.executor import ToolExecutor

S = SessionState


@dataclass(frozen=True)
class LLMMetrics:
    """Timing of one model call; `ttft` is request start to first text or tool-call delta."""

    label: str
    ttft: float | None
    duration: float
    prompt_tokens: int
    completion_tokens: int

    @property
    def tokens_per_second(self) -> float | None:
        if not self.completion_tokens or self.ttft is None or self.duration <= self.ttft:
            return None
        return self.completion_tokens / (self.duration - self.ttft)


@dataclass
class ReplyPlan:
    """What one reply runs with, resolved from the agent at the moment the reply starts."""

    llm: LLM
    instructions: str
    tools: Sequence[Tool]
    temperature: float | None = None
    max_tokens: int | None = None
    options: dict[str, object] | None = None
    max_steps: int = 4  # tool rounds in one reply; then a wrap-up step without tools
    max_reply_chars: int | None = None
    filler: ToolFiller | None = None  # voice channels: speaks while a chosen tool call runs


class Delivery:
    """How much of each bot turn the user has received.

    Text channels deliver a delta the moment it is emitted (`auto=True`). Voice channels deliver
    only what was played, and report it with `mark`, so an interruption trims the turn to the
    words the caller actually heard.

    Counts are characters of `BotTurn.content`. The space that joins a turn to the one spoken
    before it (see `voxline.text.joining`) travels only in the `bot_text_delta` event, never in
    the content, so it is never counted here: a channel maps what it played back to the turn by
    searching the content (the Speaker) or reports it per turn.
    """

    def __init__(self, auto: bool = True) -> None:
        self.auto = auto
        self._chars: dict[str, int] = {}

    def emitted(self, turn: BotTurn) -> None:
        if self.auto:
            self._chars[turn.id] = len(turn.content)

    def mark(self, turn_id: str, chars: int) -> None:
        self._chars[turn_id] = max(self._chars.get(turn_id, 0), chars)

    def heard(self, turn: BotTurn) -> str:
        return turn.content[: self._chars.get(turn.id, 0)]


# Every call the engine makes gets exactly one result: the tool's own, or one of these.
STOPPED_RESULT = "the tool was stopped because the conversation ended; it may not have finished"
NOT_STARTED_RESULT = "the tool was not run because the user interrupted"
CLOSING_RESULT = "the tool was not run because the conversation is ending"
WRAP_UP_NOTE = (
    "You have used every tool step allowed for this reply. Without calling anything, tell the "
    "user in one or two sentences what you did and what is still left to do."
)
_VERDICTS_KEPT = 16  # input verdicts remembered, so a turn is checked once however it is asked


class ReplyEngine:
    """Runs replies for one conversation. `tasks` is the group tool runs belong to: pass the
    session's, so a tool outlives the reply that started it and is cancelled only when the
    session closes; without it the engine keeps a private group (`finish_tools` closes it)."""

    def __init__(
        self,
        turns: TurnStore,
        bus: EventBus,
        state: StateMachine,
        executor: ToolExecutor,
        delivery: Delivery,
        run_context: Callable[[str], RunContext],
        *,
        tasks: TaskGroup | None = None,
        guardrails: Guardrails | None = None,
    ) -> None:
        self.turns = turns
        self.bus = bus
        self.state = state
        self.executor = executor
        self.delivery = delivery
        self._run_context = run_context
        self._owns_tasks = tasks is None
        self.tasks = tasks if tasks is not None else TaskGroup(f"tools {turns.conversation_id}")
        self._running: dict[str, asyncio.Task[ToolOutcome]] = {}  # call id -> its tool's run
        self._unanswered: dict[str, ToolCallRequest] = {}  # calls made here, no result yet
        self._bot: BotTurn | None = None  # the bot turn the model is writing right now
        self._spoken: list[BotTurn] = []  # bot turns of the latest reply
        self._tail = ""  # the last text this reply spoke, to join the next turn onto
        self._lead = ""  # whitespace the model wrote before a turn's first word
        self.log = structlog.get_logger("voxline.engine").bind(session_id=turns.conversation_id)
        self.guardrails = guardrails
        self._connection: str = getattr(turns, "connection", "")  # a SessionTurns view's
        if guardrails is not None:
            guardrails.bind(turns.conversation_id, self._connection)
        self._verdicts: dict[str, InputVerdict] = {}  # user turn id -> its input verdict
        self._filter: OutputFilter | None = None  # the reply stream's filter, this model step
        self._cut: Trip | None = None  # an output check stopped this model step
        self._watched: asyncio.Task[BotTurn | None] | None = None  # a reply a classifier races
        self._classifier_trip: Trip | None = None  # why the classifier cancelled that reply

    async def reply(self, plan: ReplyPlan) -> BotTurn | None:
        """Run the model/tool loop to a final answer; returns the last bot text turn, if any.

        Tools still running from an interrupted reply are awaited first (each is bounded by its
        timeout), so the model's first request already holds their real results."""
        last_text: BotTurn | None = None
        self._spoken = []
        self._tail = ""
        self.bus.emit("reply_started")
        self.state.to(S.THINKING)
        try:
            user = None
            if self.guardrails is not None and self.guardrails.screens_input:
                user = caller_turn(self.turns, self._connection)
            verdict = await self.check_input(user) if user is not None else None
            if verdict is not None and verdict.trip is not None:
                last_text = await self._answer_trip(verdict.trip)
            else:
                last_text = await self._watched_steps(plan, user)
        finally:
            self._tail = ""  # a later turn is a new talk cycle, joined to nothing
        self.bus.emit("reply_finished", turn=last_text)
        return last_text

    async def _steps(self, plan: ReplyPlan) -> BotTurn | None:
        last_text: BotTurn | None = None
        if self.tools_running:
            self.state.to(S.CALLING_TOOLS)
            await self.wait_tools()
            self.state.to(S.THINKING)
        # `max_steps` rounds of tools, then one more model step with tools off, told to say
        # what it did and what is left: "check, then act" fits, a loop does not.
        for step in range(plan.max_steps + 1):
            wrap_up = step == plan.max_steps
            if wrap_up:
                self.log.warning("reply reached the tool-step limit", max_steps=plan.max_steps)
            bot, calls = await self._model_step(plan, wrap_up=wrap_up)
            last_text = bot or last_text
            cut, self._cut = self._cut, None
            if cut is not None and self.guardrails is not None:
                trip = self.guardrails.complete_output_trip(cut)
                answer = await self._answer_trip(trip)
                self._record_trip(bot or answer, trip, "output")
                return answer
            if not calls or wrap_up:  # a provider ignoring tool_choice "none" runs nothing
                break
            await self._run_tools(calls)
            self.state.to(S.THINKING)
        return last_text

    @property
    def tools_running(self) -> bool:
        """A tool started by this engine has not recorded its result yet."""
        return any(not task.done() for task in self._running.values())

    async def wait_tools(self) -> None:
        """Wait for the tools running now to record their results (each run is bounded by its
        tool's timeout and retries). Cancelling the waiter (`asyncio.timeout` around it, an
        interruption) never cancels the tools."""
        pending = [task for task in self._running.values() if not task.done()]
        if pending:
            await asyncio.wait(pending)

    async def finish_tools(self, grace: float | None = None) -> None:
        """The conversation ends: let the tools running now finish (each bounded by its own
        timeout; `grace` seconds in all, when given), cancel any still running (each records a
        "stopped" result, so the stored history stays valid), and close the private task group
        if the engine made one. Call it before the owner's group closes, or the group's close
        cancels tools that were about to finish."""
        pending = [task for task in self._running.values() if not task.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        if self._owns_tasks:
            await self.tasks.close()
        if self.guardrails is not None:
            await self.guardrails.aclose()  # the classifier's model, if it has one

    # -- input guardrails -------------------------------------------------------------------
    async def check_input(self, turn: UserTurn) -> InputVerdict:
        """The input guardrails' verdict on a caller's turn, decided once per turn (asking again
        gives the same verdict). What was found is recorded on the turn (`metadata
        ["guardrails"]`: kinds and check names, never values) and a trip is emitted as
        `guardrail_tripped`. Acting on it is `reply`'s job: it checks the turn it answers
        itself, so a channel calls this only to know the verdict early."""
        known = self._verdicts.get(turn.id)
        if known is not None:
            return known
        verdict = InputVerdict()
        if self.guardrails is not None:
            verdict = await self.guardrails.check_input(turn.content)
        if len(self._verdicts) >= _VERDICTS_KEPT:
            self._verdicts.pop(next(iter(self._verdicts)))
        self._verdicts[turn.id] = verdict
        if verdict.pii and verdict.trip is None:
            annotate(
                turn, {"check": "pii", "stage": "input", "action": "note", "found": verdict.pii}
            )
        if verdict.trip is not None:
            self._record_trip(turn, verdict.trip, "input")
        return verdict

    async def _watched_steps(self, plan: ReplyPlan, user: UserTurn | None) -> BotTurn | None:
        """The model/tool loop, raced by the guardrail classifier when there is one: the loop
        never waits for it; a trip cancels this task and is answered here instead."""
        classifier = self.guardrails is not None and self.guardrails.classifier is not None
        task = asyncio.current_task()
        if not classifier or user is None or task is None:
            return await self._steps(plan)
        try:
            self.tasks.spawn(self._classify(user, task), name="guardrail classifier")
        except TaskGroupClosedError:
            return await self._steps(plan)
        self._watched = task
        try:
            return await self._steps(plan)
        except asyncio.CancelledError:
            trip, self._classifier_trip = self._classifier_trip, None
            if trip is None or task.uncancel() > 0:
                raise  # an interruption (or one beside ours): not ours to swallow
            return await self._stop_for(trip)
        finally:
            self._watched = None
            self._classifier_trip = None

    async def _classify(self, user: UserTurn, reply: asyncio.Task[BotTurn | None]) -> None:
        assert self.guardrails is not None
        trip = await self.guardrails.classify(user.content)
        if trip is None:
            return
        if self._watched is reply and not reply.done():
            self._record_trip(user, trip, "input")
            self._classifier_trip = trip
            reply.cancel()
            return
        latest = latest_own_turn(self.turns, self._connection)
        if latest is not None and not isinstance(latest, UserTurn) and self._watched is None:
            # The reply is written but may still be playing, and nothing newer was said.
            self._record_trip(user, trip, "input", late=True)
            await self._stop_for(trip)
        else:
            self._record_trip(user, trip, "input", late=True)

    async def _stop_for(self, trip: Trip) -> BotTurn:
        """Stop what this reply is saying as an interruption would (the turns are trimmed to
        what was delivered; a voice channel stops its audio on `interrupted`), then answer."""
        self._filter = None
        self._cut = None
        cut, changed = self.settle_interrupted(None)
        if changed:
            self.bus.emit("interrupted", turn=cut)
        return await self._answer_trip(trip)

    async def _answer_trip(self, trip: Trip) -> BotTurn:
        """Say the trip's response, then hand the call over when its action says so."""
        turn = self.say(trip.response or "")
        if trip.action == "handoff":
            await self._handoff(trip)
        return turn

    async def _handoff(self, trip: Trip) -> None:
        """Transfer through the channel's own tool (the model's history shows the call and
        its result, as if the model had asked); without one, record a handoff turn for
        whoever watches the conversation."""
        call = handoff_call(trip)
        if HANDOFF_TOOL not in self.executor.tools:
            reason = call.parsed_arguments()["reason"]
            self.turns.add_handoff("human", reason, {"guardrail": trip.check})
            return
        call_turn = self.turns.add_tool_call(call.id, call.name, call.arguments)
        self._unanswered[call.id] = call
        run = self._start_tool(call, call_turn)
        if run is not None:
            await asyncio.shield(run)

    def _record_trip(self, turn: Turn, trip: Trip, stage: Stage, *, late: bool = False) -> None:
        record_trip(self.bus, self.log, turn, trip, stage, late=late)

    # -- the model ---------------------------------------------------------------------------
    async def _model_step(
        self, plan: ReplyPlan, *, wrap_up: bool = False
    ) -> tuple[BotTurn | None, list[ToolCallRequest]]:
        messages = build_messages(plan.instructions, self.turns)
        if wrap_up:  # appended last, never stored: the cached prompt prefix stays valid
            messages.append(ChatMessage(role="system", content=WRAP_UP_NOTE))
        request = LLMRequest(
            messages=messages,
            tools=[t.definition() for t in plan.tools],
            tool_choice="none" if wrap_up and plan.tools else None,
            temperature=plan.temperature,
            max_tokens=plan.max_tokens,
            options=dict(plan.options or {}),
        )
        calls = ToolCallAccumulator()
        usage = Usage()
        started = time.monotonic()
        first: float | None = None
        self._bot = None
        self._lead = ""
        self._filter = self.guardrails.output_filter() if self.guardrails is not None else None
        async for event in plan.llm.stream(request):
            if first is None and not isinstance(event, Usage):
                first = time.monotonic() - started
            if isinstance(event, TextDelta):
                if self._filtered(event.text, plan.max_reply_chars):
                    self.log.info("reply cut at max_reply_chars", limit=plan.max_reply_chars)
                    calls = ToolCallAccumulator()
                    self._filter = None  # what it holds is past the limit
                    break
                if self._cut is not None:
                    calls = ToolCallAccumulator()
                    break
            elif isinstance(event, ToolCallDelta):
                calls.add(event)
                if event.name and plan.filler is not None and not self._tail:  # still silent
                    plan.filler.chosen(self, event.name)
            else:
                usage = event
        self._flush_filter()
        bot, self._bot = self._bot, None
        if bot is not None:
            bot.complete = True
        metrics = LLMMetrics(
            plan.llm.label,
            first,
            time.monotonic() - started,
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        self.bus.emit("metrics", kind="llm", metrics=metrics)
        self.log.info(
            "llm step",
            turn_id=bot.id if bot else None,
            llm=metrics.label,
            ttft_ms=round(first * 1000) if first is not None else None,
            duration_ms=round(metrics.duration * 1000),
            completion_tokens=usage.completion_tokens,
            tokens_per_second=round(tps, 1) if (tps := metrics.tokens_per_second) else None,
        )
        return bot, calls.calls()

    def _filtered(self, text: str, limit: int | None) -> bool:
        """A model delta through the output guardrails into the bot turn (`_append`)."""
        if self._filter is None:
            return self._append(text, limit)
        return self._take(self._filter.feed(text), limit)

    def _flush_filter(self) -> None:
        """The step is over: what the filter still holds is decided and appended."""
        held, self._filter = self._filter, None
        if held is not None and self._cut is None:
            self._take(held.flush(), None)

    def _take(self, released: Released, limit: int | None) -> bool:
        reached = self._append(released.text, limit)
        for note in released.notes:
            if self._bot is not None:
                self._record_trip(self._bot, note, "output")
        if released.trip is not None:
            self._cut = released.trip
        return reached

    def _append(self, text: str, limit: int | None = None) -> bool:
        """Add a delta to the bot turn; returns True when the reply reached `limit`.

        A turn's leading whitespace is held back (a step that writes only "\n" before a tool
        call makes no turn) and never stored; a turn that follows earlier speech of this reply
        gets its joint ("up. The", not "up.The") in the emitted delta only."""
        if not text:
            return False
        joint = ""
        if self._bot is None:
            words = text.lstrip()
            if not words:
                self._lead += text
                return False
            joint = separator(self._tail, self._lead + text)
            self._lead, text = "", words
            self._bot = self.turns.add_bot_text()
            self._spoken.append(self._bot)
            self.state.to(S.SPEAKING)
        reached = limit is not None and len(self._bot.content) + len(text) >= limit
        if reached and limit is not None:
            text = text[: max(0, limit - len(self._bot.content))]
        self._bot.content += text
        self.delivery.emitted(self._bot)
        self._emit_text(self._bot, joint + text)
        return reached

    def _emit_text(self, turn: BotTurn, delta: str) -> None:
        if delta:
            self._tail = delta
        self.bus.emit("bot_text_delta", turn=turn, delta=delta)

    async def _run_tools(self, calls: list[ToolCallRequest]) -> None:
        """Start every call in the long-lived group, then wait for them without owning them:
        cancelling the reply stops the wait, not the tools."""
        self.state.to(S.CALLING_TOOLS)
        call_turns = [self.turns.add_tool_call(c.id, c.name, c.arguments) for c in calls]
        self._unanswered.update((c.id, c) for c in calls)
        runs = [self._start_tool(c, t) for c, t in zip(calls, call_turns, strict=True)]
        started = [run for run in runs if run is not None]
        if started:
            await asyncio.shield(asyncio.gather(*started, return_exceptions=True))

    def _start_tool(
        self, call: ToolCallRequest, call_turn: ToolCallTurn
    ) -> asyncio.Task[ToolOutcome] | None:
        try:
            task = self.tasks.spawn(self._run_tool(call, call_turn), name=f"tool {call.name}")
        except TaskGroupClosedError:
            self._record(call, ToolOutcome(call.id, call.name, CLOSING_RESULT, True, attempts=0))
            return None
        self._running[call.id] = task
        task.add_done_callback(lambda done: self._tool_done(call, done))
        return task

    def _tool_done(self, call: ToolCallRequest, task: asyncio.Task[ToolOutcome]) -> None:
        self._running.pop(call.id, None)
        if call.id in self._unanswered:  # cancelled before its first step: it never ran
            self._record(call, ToolOutcome(call.id, call.name, CLOSING_RESULT, True, attempts=0))

    async def _run_tool(self, call: ToolCallRequest, call_turn: ToolCallTurn) -> ToolOutcome:
        self.bus.emit("tool_started", call=call, turn=call_turn)
        try:
            outcome = await self.executor.run(call, self._run_context(call.id))
        except asyncio.CancelledError:  # only closing the conversation cancels a tool
            self._record(call, ToolOutcome(call.id, call.name, STOPPED_RESULT, is_error=True))
            raise
        except Exception as exc:  # the executor turns failures into outcomes; this is a bug
            self.log.exception("tool run failed outside the executor", tool=call.name)
            reason = f"the tool failed: {type(exc).__name__}"
            outcome = ToolOutcome(call.id, call.name, reason, is_error=True)
        if outcome.approval_id:
            call_turn.approval_id = outcome.approval_id
            self.bus.emit(
                "approval_requested", approval_id=outcome.approval_id, call=call, turn=call_turn
            )
        self._record(call, outcome)
        return outcome

    def _record(self, call: ToolCallRequest, outcome: ToolOutcome) -> None:
        self._unanswered.pop(call.id, None)
        result = self.turns.add_tool_result(
            call.id, call.name, outcome.content, is_error=outcome.is_error
        )
        self.bus.emit("tool_finished", call=call, outcome=outcome, turn=result)

    def say(self, text: str) -> BotTurn:
        """Fixed text (a greeting, a tool's progress note) as a complete bot turn, joined to
        what the reply in flight already said and trimmed with it on an interruption. The
        output guardrails mask and rewrite it (a tool's note may quote a card number), but
        never cut it."""
        notes: list[Trip] = []
        if self.guardrails is not None:
            text, notes = self.guardrails.output.rewrite(text)
        joint = separator(self._tail, text)
        turn = self.turns.add_bot_text()
        turn.content = text.lstrip()
        turn.complete = True
        for note in notes:
            self._record_trip(turn, note, "output")
        self.spoken(turn)
        self.delivery.emitted(turn)
        self._emit_text(turn, joint + turn.content)
        return turn

    def spoken(self, turn: BotTurn) -> None:
        """Count a turn said outside the model loop (a greeting, a tool's progress note) with the
        latest reply, so an interruption trims it to what was heard like any other."""
        self._spoken.append(turn)
        if turn.content:
            self._tail = turn.content

    def settle_interrupted(self, heard_text: str | None) -> tuple[BotTurn | None, bool]:
        """After an interruption: trim the latest reply's bot turns to what the user received,
        and close tool calls that will never get a result, so the history stays truthful and
        valid for the next request.

        `heard_text`, when the channel knows it (ConversationRelay), is what was heard of the
        whole reply as spoken, joints included: it is mapped across the reply's turns in order
        (turns heard in full stay, the one where hearing stopped is trimmed, later ones are
        deleted). Without it each turn is trimmed to what `Delivery` recorded. Tool calls and
        results between the turns stay; a tool still running is left to record its real result.
        Only calls this engine made are closed here: one it never started gets "not run", and
        an unanswered call it does not know (another connection's tool, still running; a
        restored history) is left alone, since the request leaves such calls out anyway.
        Returns the last turn that was cut (None when what was cut was removed entirely) and
        whether anything was cut short at all."""
        in_flight, self._bot = self._bot, None
        self._tail = self._lead = ""
        spoken = [bot for bot in self._spoken if bot.id in self.turns]
        self._spoken = []
        if heard_text is not None:
            lengths = heard_lengths(heard_text, [bot.content for bot in spoken])
        else:
            lengths = [len(self.delivery.heard(bot)) for bot in spoken]
        cut: BotTurn | None = None
        changed = False
        for bot, length in zip(spoken, lengths, strict=True):
            heard = bot.content[:length]
            if heard == bot.content and bot is not in_flight:
                continue
            changed = True
            if heard.strip():
                bot.content = heard
                bot.interrupted = True
                cut = bot
            else:
                self.turns.delete(bot.id)
        for call in list(self._unanswered.values()):
            run = self._running.get(call.id)
            if run is not None and not run.done():
                continue  # it records its real result when it finishes
            self._record(
                call, ToolOutcome(call.id, call.name, NOT_STARTED_RESULT, True, attempts=0)
            )
            changed = True
        return cut, changed
