"""One reply: stream the model, record what it says, run the tools it asks for, repeat.

The engine writes everything it learns into the TurnStore as it happens (a delta goes into the
bot turn the moment it arrives; a tool result is recorded the moment that tool finishes), so an
interruption never has to reconstruct anything: it cancels the task and trims what is there to
what the user actually received.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from voxline.conversation.context import build_messages
from voxline.conversation.state import SessionState, StateMachine
from voxline.conversation.turns import BotTurn, ToolCallTurn, ToolResultTurn, TurnStore
from voxline.events import EventBus
from voxline.providers.llm.base import (
    LLM,
    LLMRequest,
    TextDelta,
    ToolCallAccumulator,
    ToolCallDelta,
    ToolCallRequest,
    Usage,
)
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
    max_steps: int = 8
    max_reply_chars: int | None = None


class Delivery:
    """How much of each bot turn the user has received.

    Text channels deliver a delta the moment it is emitted (`auto=True`). Voice channels deliver
    only what was played, and report it with `mark`, so an interruption trims the turn to the
    words the caller actually heard.
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


class ReplyEngine:
    def __init__(
        self,
        turns: TurnStore,
        bus: EventBus,
        state: StateMachine,
        executor: ToolExecutor,
        delivery: Delivery,
        run_context: Callable[[str], RunContext],
    ) -> None:
        self.turns = turns
        self.bus = bus
        self.state = state
        self.executor = executor
        self.delivery = delivery
        self._run_context = run_context
        self._bot: BotTurn | None = None  # the bot turn the model is writing right now
        self._spoken: list[BotTurn] = []  # bot turns of the latest reply
        self.log = structlog.get_logger("voxline.engine").bind(session_id=turns.conversation_id)

    async def reply(self, plan: ReplyPlan) -> BotTurn | None:
        """Run the model/tool loop to a final answer; returns the last bot text turn, if any."""
        last_text: BotTurn | None = None
        self._spoken = []
        self.bus.emit("reply_started")
        self.state.to(S.THINKING)
        for _step in range(plan.max_steps):
            bot, calls = await self._model_step(plan)
            last_text = bot or last_text
            if not calls:
                break
            await self._run_tools(calls)
            self.state.to(S.THINKING)
        else:
            self.log.warning("reply stopped at the tool-step limit", max_steps=plan.max_steps)
        self.bus.emit("reply_finished", turn=last_text)
        return last_text

    async def _model_step(self, plan: ReplyPlan) -> tuple[BotTurn | None, list[ToolCallRequest]]:
        request = LLMRequest(
            messages=build_messages(plan.instructions, self.turns),
            tools=[t.definition() for t in plan.tools],
            temperature=plan.temperature,
            max_tokens=plan.max_tokens,
            options=dict(plan.options or {}),
        )
        calls = ToolCallAccumulator()
        usage = Usage()
        started = time.monotonic()
        first: float | None = None
        self._bot = None
        async for event in plan.llm.stream(request):
            if first is None and not isinstance(event, Usage):
                first = time.monotonic() - started
            if isinstance(event, TextDelta):
                if self._append(event.text, plan.max_reply_chars):
                    self.log.info("reply cut at max_reply_chars", limit=plan.max_reply_chars)
                    calls = ToolCallAccumulator()
                    break
            elif isinstance(event, ToolCallDelta):
                calls.add(event)
            else:
                usage = event
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

    def _append(self, text: str, limit: int | None = None) -> bool:
        """Add a delta to the bot turn; returns True when the reply reached `limit`."""
        if not text:
            return False
        if self._bot is None:
            self._bot = self.turns.add_bot_text()
            self._spoken.append(self._bot)
            self.state.to(S.SPEAKING)
        reached = limit is not None and len(self._bot.content) + len(text) >= limit
        if reached and limit is not None:
            text = text[: max(0, limit - len(self._bot.content))]
        self._bot.content += text
        self.delivery.emitted(self._bot)
        self.bus.emit("bot_text_delta", turn=self._bot, delta=text)
        return reached

    async def _run_tools(self, calls: list[ToolCallRequest]) -> None:
        self.state.to(S.CALLING_TOOLS)
        call_turns = [self.turns.add_tool_call(c.id, c.name, c.arguments) for c in calls]
        await asyncio.gather(
            *(self._run_tool(c, t) for c, t in zip(calls, call_turns, strict=True))
        )

    async def _run_tool(self, call: ToolCallRequest, call_turn: ToolCallTurn) -> ToolOutcome:
        self.bus.emit("tool_started", call=call, turn=call_turn)
        outcome = await self.executor.run(call, self._run_context(call.id))
        if outcome.approval_id:
            call_turn.approval_id = outcome.approval_id
            self.bus.emit(
                "approval_requested", approval_id=outcome.approval_id, call=call, turn=call_turn
            )
        result = self.turns.add_tool_result(
            call.id, call.name, outcome.content, is_error=outcome.is_error
        )
        self.bus.emit("tool_finished", call=call, outcome=outcome, turn=result)
        return outcome

    def spoken(self, turn: BotTurn) -> None:
        """Count a turn said outside the model loop (a greeting, a tool's progress note) with the
        latest reply, so an interruption trims it to what was heard like any other."""
        self._spoken.append(turn)

    def settle_interrupted(self, heard_text: str | None) -> tuple[BotTurn | None, bool]:
        """After an interruption: trim the latest reply's bot turns to what the user received
        (`heard_text`, when the channel knows it, replaces the delivery estimate of the last
        one), and close tool calls that never got a result, so the history stays truthful and
        valid for the next request. Returns the turn that was cut (None when nothing of it was
        heard, and it was removed) and whether anything was cut short at all."""
        in_flight, self._bot = self._bot, None
        cut: BotTurn | None = None
        changed = False
        for bot in self._spoken:
            if bot.id not in self.turns:
                continue
            last = bot is self._spoken[-1]
            heard = heard_text if last and heard_text is not None else self.delivery.heard(bot)
            if heard == bot.content and bot is not in_flight:
                continue
            changed = True
            if heard.strip():
                bot.content = heard
                bot.interrupted = True
                cut = bot
            else:
                self.turns.delete(bot.id)
        self._spoken = []
        answered = {t.call_id for t in self.turns if isinstance(t, ToolResultTurn)}
        for turn in self.turns.all():
            if isinstance(turn, ToolCallTurn) and turn.call_id not in answered:
                self.turns.add_tool_result(
                    turn.call_id,
                    turn.name,
                    "the tool was cancelled because the user interrupted; it may not have run",
                    is_error=True,
                )
                changed = True
        return cut, changed
