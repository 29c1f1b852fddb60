"""`Session`: one conversation, whatever the channel.

The session owns the conversation's state (turns, state machine, event bus) and the lifecycle
around it (restore from storage, greeting, write-behind sync, approvals, summaries). The work of
a reply lives in `ReplyEngine`; channels only call `send_text` / `interrupt` and listen to events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import structlog

from voxline.agents.runtime import AgentRuntime, agent_spec_of
from voxline.conversation.collector import COLLECTOR
from voxline.conversation.engine import Delivery, ReplyEngine, ReplyPlan
from voxline.conversation.state import SessionState, StateMachine
from voxline.conversation.summarizer import Summarizer
from voxline.conversation.sync import TurnSync
from voxline.conversation.turns import BotTurn, TurnStore, new_id, turn_from_record
from voxline.events import EventBus
from voxline.providers.llm.base import LLM, ChatMessage, LLMRequest, Warmable
from voxline.providers.llm.registry import create_llm
from voxline.settings import Settings, load_settings
from voxline.store.base import ApprovalRecord, ApprovalStatus, ConversationRecord, Store
from voxline.store.factory import open_store
from voxline.tools.approvals import ApprovalManager
from voxline.tools.base import RunContext, Tool
from voxline.tools.executor import ToolExecutor

S = SessionState


class Session:
    """Runs one conversation with an agent: text in, streamed reply and tool calls out."""

    CLOSE_FLUSH_TIMEOUT = 10.0  # seconds close() waits for storage before giving up loudly

    def __init__(
        self,
        agent: AgentRuntime,
        *,
        conversation_id: str | None = None,
        llm: LLM | None = None,
        store: Store | None = None,
        settings: Settings | None = None,
        approvals: ApprovalManager | None = None,
        subject: str | None = None,
        channel: str = "text",
        user_data: dict[str, Any] | None = None,
        auto_deliver: bool = True,
    ) -> None:
        self.agent = agent
        self.spec = agent_spec_of(agent)
        self.id = conversation_id or new_id("conv")
        self.subject = subject
        self.channel = channel
        self.user_data = dict(user_data or {})
        self.settings = settings or load_settings()
        self.bus = EventBus()
        self.turns = TurnStore(self.id, self.bus)
        self._state = StateMachine(self.bus)
        self._llm = llm
        self._store = store
        self._owns_store = store is None
        self._approvals = approvals
        self.delivery = Delivery(auto=auto_deliver)
        self._tools: dict[str, Tool] = {}
        self._executor: ToolExecutor | None = None
        self._engine: ReplyEngine | None = None
        self._sync: TurnSync | None = None
        self._summarizer: Summarizer | None = None
        self._reply_task: asyncio.Task[BotTurn | None] | None = None
        self._reply_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._counted = False  # registered with the process-wide collector policy
        self.log = structlog.get_logger("voxline.session").bind(session_id=self.id)

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def state(self) -> SessionState:
        return self._state.state

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("session not started")
        return self._store

    @property
    def approvals(self) -> ApprovalManager:
        if self._approvals is None:
            raise RuntimeError("session not started")
        return self._approvals

    def set_state(self, state: SessionState) -> None:
        """Enter a phase the reply engine cannot see, such as the voice pipeline's
        LISTENING -> TRANSCRIBING while the caller's words become text (invalid moves raise)."""
        self._state.to(state)

    def on(self, event: str, handler: Callable[..., Any]) -> Callable[[], None]:
        """Subscribe to a session event (see `voxline.events.EVENT_NAMES`)."""
        return self.bus.on(event, handler)

    async def start(self, *, greet: bool = True) -> None:
        """Restore history if this conversation exists, start syncing, greet a new caller."""
        if self._store is None:
            self._store = await open_store(settings=self.settings)
        if self._llm is None:
            self._llm = create_llm(self.agent.llm_config().spec or self.settings.llm, self.settings)
        if self._approvals is None:
            self._approvals = ApprovalManager(self._store)
        self._tools = {t.name: t for t in self.agent.tools()}
        self._executor = ToolExecutor(
            self._tools.values(),
            approvals=self._approvals,
            pending_message=self.spec.approvals.pending_message,
        )
        self._engine = ReplyEngine(
            self.turns, self.bus, self._state, self._executor, self.delivery, self._run_context
        )
        existing = await self._store.get_conversation(self.id)
        records = await self._store.load_turns(self.id)
        self.turns.restore([turn_from_record(r) for r in records])
        record = existing or ConversationRecord(
            id=self.id, agent=self.spec.name, subject=self.subject, channel=self.channel
        )
        await self._store.upsert_conversation(record)
        self._sync = TurnSync(self._store, self.bus)
        self._sync.start()
        policy = self.spec.summarization
        if policy.enabled:
            summary_llm = create_llm(policy.llm, self.settings) if policy.llm else self._llm
            self._summarizer = Summarizer(policy, summary_llm)
        if isinstance(self._llm, Warmable):
            self._spawn(self._llm.warm(self._warm_request()))
        self._unsubscribe = self._approvals.subscribe(self.id, self._on_approval_decided)
        COLLECTOR.session_started()
        self._counted = True
        self.bus.emit("session_started", session=self, resumed=bool(records))
        self._state.to(S.LISTENING)
        self.log.info("session started", agent=self.spec.name, resumed=bool(records))
        for pending in await self._store.list_approvals(conversation_id=self.id):
            if pending.status != ApprovalStatus.PENDING and not pending.applied:
                await self._on_approval_decided(pending)
        if greet and not records and self.spec.greeting:
            await self.say(self.spec.greeting)

    async def close(self) -> None:
        """Stop any reply, write every turn through, release what this session opened."""
        await self._cancel_reply()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._sync is not None:
            try:
                async with asyncio.timeout(self.CLOSE_FLUSH_TIMEOUT):
                    await self._sync.close()
            except TimeoutError:
                self.log.error("storage did not take the last turns before the close timeout")
        await self.bus.drain()
        self.bus.emit("session_closed", session=self)
        self._state.to(S.IDLE)
        if self._owns_store and self._store is not None:
            await self._store.close()
        if self._counted:
            self._counted = False
            COLLECTOR.session_closed()
        self.log.info("session closed", turns=len(self.turns))

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- conversation ------------------------------------------------------------------------
    async def send_text(self, text: str) -> str:
        """A user message: interrupts any reply in flight, then answers. Returns the reply text."""
        self.interrupt()
        self.turns.add_user_text(text, channel=self.channel)
        turn = await self.respond()
        return turn.content if turn else ""

    async def respond(self) -> BotTurn | None:
        """Run a reply to the history as it stands (after a user turn, an approval, a tool)."""
        async with self._reply_lock:
            task = asyncio.create_task(self._reply())
            self._reply_task = task
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled() and not _current_task_cancelling():
                    return None  # the reply was interrupted, not the caller
                raise
            finally:
                if self._reply_task is task:
                    self._reply_task = None

    async def _reply(self) -> BotTurn | None:
        engine = self._require_engine()
        config = self.agent.llm_config()
        assert self._llm is not None
        plan = ReplyPlan(
            llm=self._llm,
            instructions=self.agent.instructions(),
            tools=list(self._tools.values()),
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            options=config.options,
            max_steps=self.spec.max_tool_steps,
            max_reply_chars=self.spec.guardrails.max_reply_chars,
        )
        try:
            turn = await engine.reply(plan)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.exception("reply failed")
            self.bus.emit("error", error=exc, where="reply")
            engine.settle_interrupted(None)
            apology = await self.say(self.spec.error_message)
            self._state.to(S.LISTENING)
            return apology
        self._state.to(S.LISTENING)
        self._maybe_summarize()
        return turn

    def interrupt(self, heard_text: str | None = None) -> BotTurn | None:
        """Barge-in: cancel the reply in flight now, and trim the bot turn to what the user got
        (`heard_text` when the channel knows it exactly). Tool calls that ran stay recorded."""
        engine = self._engine
        if engine is None:
            return None
        task = self._reply_task
        in_flight = task is not None and not task.done()
        if task is not None and in_flight:
            task.cancel()
            self._reply_task = None
        elif heard_text is None and self.delivery.auto:
            return None  # nothing in flight and text channels deliver everything
        cut, changed = engine.settle_interrupted(heard_text)
        if not in_flight and not changed:
            return None  # nothing was cut short: not an interruption worth an event
        if self.state in (S.THINKING, S.SPEAKING, S.CALLING_TOOLS):
            self._state.to(S.INTERRUPTED)
            self._state.to(S.LISTENING)
        self.bus.emit("interrupted", turn=cut)
        self.log.info("interrupted", turn_id=cut.id if cut else None)
        return cut

    async def say(self, text: str) -> BotTurn:
        """Speak/send fixed text (a greeting, a tool's progress note) as a bot turn."""
        turn = self.turns.add_bot_text()
        turn.content = text
        turn.complete = True
        if self._engine is not None:
            self._engine.spoken(turn)
        self.delivery.emitted(turn)
        self.bus.emit("bot_text_delta", turn=turn, delta=text)
        return turn

    async def wait_idle(self) -> None:
        """Wait until no reply runs and every turn is written to storage."""
        async with self._reply_lock:
            pass
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        if self._sync is not None:
            await self._sync.flush()

    # -- approvals ---------------------------------------------------------------------------
    async def _on_approval_decided(self, record: ApprovalRecord) -> None:
        """A human decided: run the tool (or not) and let the model tell the user."""
        self._spawn(self._apply_approval(record))

    async def _apply_approval(self, record: ApprovalRecord) -> None:
        executor = self._require_executor()
        tool = self._tools.get(record.tool)
        call_id = new_id("call")
        if tool is not None:
            outcome = await executor.run_approved(record, tool, self._run_context(call_id))
            content, is_error = outcome.content, outcome.is_error
        else:
            content = f"The {record.tool} tool is no longer available, so it was not run."
            is_error = True
            await self.approvals.mark_applied(record.id, content)
        self.turns.add_tool_call(
            call_id, record.tool, json.dumps(record.arguments), approval_id=record.id
        )
        self.turns.add_tool_result(call_id, record.tool, content, is_error=is_error)
        self.bus.emit("approval_resolved", approval=record)
        await self.respond()

    # -- helpers -----------------------------------------------------------------------------
    def _warm_request(self) -> LLMRequest:
        return LLMRequest(
            messages=[ChatMessage(role="system", content=self.agent.instructions())],
            tools=[t.definition() for t in self._tools.values()],
        )

    def _run_context(self, call_id: str) -> RunContext:
        return RunContext(
            conversation_id=self.id,
            call_id=call_id,
            subject=self.subject,
            user_data=self.user_data,
            session=self,
            say=self._say_text,
            log=self.log.bind(call_id=call_id),
        )

    async def _say_text(self, text: str) -> None:
        """`RunContext.say`: a tool's progress note, spoken like any bot turn."""
        await self.say(text)

    def _maybe_summarize(self) -> None:
        summarizer = self._summarizer
        if summarizer is not None and summarizer.should_summarize(self.turns.all()):
            self._spawn(summarizer.summarize(self.turns))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("background task failed", exc_info=exc)
            self.bus.emit("error", error=exc, where="background")

    async def _cancel_reply(self) -> None:
        task = self._reply_task
        if task is not None and not task.done():
            self.interrupt()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _require_engine(self) -> ReplyEngine:
        if self._engine is None:
            raise RuntimeError("call `await session.start()` first")
        return self._engine

    def _require_executor(self) -> ToolExecutor:
        if self._executor is None:
            raise RuntimeError("call `await session.start()` first")
        return self._executor


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
