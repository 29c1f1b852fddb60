"""`Session`: one live connection to a conversation, whatever the channel.

A session is one call, one SMS exchange, one API text session or one terminal chat. It owns what
belongs to that connection: the reply in flight, the state machine, the event bus its channel
listens to, what the user has heard (`Delivery`), and a task group that every task it starts
belongs to. The conversation's *memory* (turn records, write-behind sync) is a
`ConversationMemory` that several live sessions may share: two calls from one number are two
sessions over one memory, and a reply goes only to the session whose input caused it. A session
made without a memory opens a private one, so standalone use is unchanged.

The work of a reply lives in `ReplyEngine`; channels only call `send_text` / `interrupt` and
listen to events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from voxline.agents.runtime import AgentRuntime, agent_spec_of
from voxline.conversation.collector import COLLECTOR
from voxline.conversation.context import build_messages
from voxline.conversation.engine import Delivery, ReplyEngine, ReplyPlan
from voxline.conversation.filler import ToolFiller
from voxline.conversation.memory import ConversationMemory, SessionTurns
from voxline.conversation.speculation import SpeculativeReply
from voxline.conversation.state import SessionState, StateMachine
from voxline.conversation.summarizer import Summarizer
from voxline.conversation.turns import BotTurn, Turn, new_id
from voxline.events import EventBus
from voxline.guardrails.runner import Guardrails
from voxline.guardrails.storage import record_transform
from voxline.providers.llm.base import LLM, ChatMessage, LLMRequest, Warmable
from voxline.providers.llm.registry import create_llm
from voxline.settings import Settings, load_settings
from voxline.store.base import ApprovalRecord, ApprovalStatus, ConversationRecord, Store
from voxline.store.factory import open_store
from voxline.tasks import TaskGroup
from voxline.tools.approvals import ApprovalManager, ApprovalStateError
from voxline.tools.base import RunContext, Tool
from voxline.tools.executor import ToolExecutor

S = SessionState

# Memory events a session passes on to its own bus, for its own turns only.
_TURN_EVENTS = ("turn_added", "turn_updated", "turn_deleted")


class SessionClosedError(RuntimeError):
    """The session was closed: it takes no more input and starts no more work."""


class Session:
    """One live connection to a conversation: text in, streamed reply and tool calls out."""

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
        memory: ConversationMemory | None = None,
        connection_id: str | None = None,
        own_approvals: bool | None = None,
    ) -> None:
        """`memory`: the conversation's shared memory, already opened by whoever shares it (the
        server's hub); without one the session opens and closes a private one.
        `connection_id`: this connection's id (a CallSid, a socket id); made up when absent.
        `own_approvals`: whether this session hears approval decisions itself (the default
        when it owns its memory); a server routes them to the right session instead."""
        self.agent = agent
        self.spec = agent_spec_of(agent)
        if memory is not None:
            conversation_id = memory.id
        self.id = conversation_id or new_id("conv")
        self.connection_id = connection_id or new_id("conn")
        self.subject = subject
        self.channel = channel
        self.user_data = dict(user_data or {})
        self.settings = settings or load_settings()
        self.bus = EventBus()
        self.memory = memory or ConversationMemory(self.id)
        self._owns_memory = memory is None
        self._own_approvals = self._owns_memory if own_approvals is None else own_approvals
        self.turns = SessionTurns(self.memory.turns, channel=channel, connection=self.connection_id)
        self._forwarding = [
            self.memory.bus.on(name, self._forward(name)) for name in (*_TURN_EVENTS,)
        ]
        self._forwarding.append(self.memory.bus.on("summary_created", self._forward_summary))
        self._state = StateMachine(self.bus)
        self._llm = llm
        self._store = store
        self._owns_store = store is None
        self._approvals = approvals
        self.delivery = Delivery(auto=auto_deliver)
        self._tools: dict[str, Tool] = {}
        self._executor: ToolExecutor | None = None
        self._engine: ReplyEngine | None = None
        self._responder: Callable[[], None] | None = None
        self._summarizer: Summarizer | None = None
        self._reply_task: asyncio.Task[BotTurn | None] | None = None
        self._reply_lock = asyncio.Lock()
        self.tasks = TaskGroup(f"session {self.connection_id}", on_error=self._background_error)
        self._unsubscribe: Callable[[], None] | None = None
        self._counted = False  # registered with the process-wide collector policy
        self._started = False
        self._closed = False
        self.log = structlog.get_logger("voxline.session").bind(
            session_id=self.id, connection=self.connection_id, channel=channel
        )

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

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def summarizer(self) -> Summarizer | None:
        """The agent's summarizer (its policy and summary model), made at start when the
        policy is on; a voice engine that answers for the session runs it itself."""
        return self._summarizer

    def on(self, event: str, handler: Callable[..., Any]) -> Callable[[], None]:
        """Subscribe to a session event (see `voxline.events.EVENT_NAMES`). Turn events are
        this connection's own turns; the memory's bus has everyone's."""
        return self.bus.on(event, handler)

    def _forward(self, name: str) -> Callable[..., None]:
        def forward(turn: Turn, **payload: Any) -> None:
            if turn.connection == self.connection_id:
                self.bus.emit(name, turn=turn, **payload)

        return forward

    def _forward_summary(self, **payload: Any) -> None:
        self.bus.emit("summary_created", **payload)

    async def start(self, *, greet: bool = True) -> None:
        """Open the memory if this session owns it (restoring history), wire the reply engine,
        apply approvals decided while nobody was here, greet a new caller."""
        if self._closed:
            raise SessionClosedError("a closed session cannot be started again")
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
            self.turns,
            self.bus,
            self._state,
            self._executor,
            self.delivery,
            self.run_context,
            tasks=self.tasks,
            guardrails=Guardrails.for_agent(self.spec.guardrails, self.settings),
        )
        if self._owns_memory:
            record = ConversationRecord(
                id=self.id, agent=self.spec.name, subject=self.subject, channel=self.channel
            )
            await self.memory.open(
                self._store, record, transform=record_transform(self.spec.guardrails)
            )
        resumed = len(self.memory.turns) > 0
        policy = self.spec.summarization
        if policy.enabled:
            summary_llm = create_llm(policy.llm, self.settings) if policy.llm else self._llm
            self._summarizer = Summarizer(policy, summary_llm)
        if isinstance(self._llm, Warmable):
            self.tasks.spawn(self._llm.warm(self._warm_request()), name="warm")
        if self._own_approvals:
            self._unsubscribe = self._approvals.subscribe(self.id, self._on_approval_decided)
        COLLECTOR.session_started()
        self._counted = True
        self._started = True
        self.bus.emit("session_started", session=self, resumed=resumed)
        self._state.to(S.LISTENING)
        self.log.info("session started", agent=self.spec.name, resumed=resumed)
        if self._own_approvals:
            for pending in await self._store.list_approvals(conversation_id=self.id):
                if pending.status != ApprovalStatus.PENDING and not pending.applied:
                    await self._on_approval_decided(pending)
        if greet and not resumed and self.spec.greeting:
            await self.say(self.spec.greeting)

    async def close(self) -> None:
        """Stop the reply, cancel and await every task this session started (tools that began
        finish under their own timeout first), then write the turns through if the memory is
        ours. Nothing starts after this; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._cancel_reply()
        if self._engine is not None:
            await self._engine.finish_tools()
        await self.tasks.close()
        if self._started and self.memory.unsettled(self.connection_id):
            # A connection that ends mid-exchange (a hang-up before the answer) ends it as
            # interrupted, so the other sessions of this memory see what was said on it.
            self.memory.settle_abandoned(self.connection_id, lost=False)
        if self._unsubscribe is not None:
            self._unsubscribe()
        for off in self._forwarding:
            off()
        if self._owns_memory:
            try:
                async with asyncio.timeout(self.CLOSE_FLUSH_TIMEOUT):
                    await self.memory.close()
            except TimeoutError:
                self.log.error("storage did not take the last turns before the close timeout")
        await self.bus.drain()
        self.bus.emit("session_closed", session=self)
        if self._started:
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
    async def send_text(self, text: str, *, speculation: SpeculativeReply | None = None) -> str:
        """A user message: interrupts this connection's reply in flight, then answers. Returns
        the reply text. Cancelling the caller cancels the reply (what was said stays recorded).
        Raises `SessionClosedError` after `close()`.

        `speculation`: a guess from `speculate` that this message commits. The reply's first
        model request is served from it when that request is the guessed one (see
        `voxline.conversation.speculation`); otherwise the model is asked as usual. Either way
        the guess is finished with when the reply is."""
        try:
            self._check_open()
            self.interrupt()
            self.turns.add_user_text(text, channel=self.channel)
            turn = await self.respond(speculation=speculation)
        finally:
            if speculation is not None:
                speculation.cancel()  # not used (a guardrail answered, a changed history)
        return turn.content if turn else ""

    def speculate(self, text: str) -> SpeculativeReply | None:
        """Start the model on `text` as if the caller had just said it, recording and emitting
        nothing: no user turn, no delta, no tool run. The voice pipeline calls this when the
        caller pauses, and commits the guess with `send_text(final, speculation=guess)` or
        drops it with `guess.cancel()`. None when no guess can be made now (not started,
        closed, a reply or tool in flight, or a speech-to-speech engine answering), and for an
        agent whose input guardrails check the caller's words before the model may see them."""
        engine = self._engine
        if self._closed or engine is None or self._llm is None or self._responder:
            return None
        if self._reply_lock.locked() or engine.tools_running:
            return None  # the history is about to change: a guess would not fit
        if engine.guardrails is not None and engine.guardrails.screens_input:
            return None  # unchecked words would reach the model
        config = self.agent.llm_config()
        messages = build_messages(self.agent.instructions(), self.turns)
        messages.append(ChatMessage(role="user", content=text))
        request = LLMRequest(
            messages=messages,
            tools=[t.definition() for t in self._tools.values()],
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            options=dict(config.options or {}),
        )
        return SpeculativeReply(self._llm, request, text, self.tasks)

    def injected(self, text: str, *, as_system: bool = False) -> Coroutine[Any, Any, Any]:
        """Text from outside the connection (an operator or a bot over the API): a user turn to
        answer, or, `as_system`, an instruction acted on at once. Returns the work, for the
        channel to run as its own task."""
        if as_system:
            self.interrupt()
            self.turns.add_system(text)
            return self.respond()
        return self.send_text(text)

    async def respond(self, *, speculation: SpeculativeReply | None = None) -> BotTurn | None:
        """Run a reply to the history as it stands (after a user turn, an approval, a tool).

        The reply is a task of its own so that `interrupt()` can cancel it without cancelling
        the caller (who then gets None); cancelling the caller interrupts the reply and waits
        for it to settle, so no reply ever outlives whoever awaits it."""
        self._check_open()
        async with self._reply_lock:
            self._check_open()
            task = self.tasks.spawn(self._reply(speculation), name="reply")
            self._reply_task = task
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled() and not _current_task_cancelling():
                    return None  # the reply was interrupted, not the caller
                if self._reply_task is task:
                    self.interrupt()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise
            finally:
                if self._reply_task is task:
                    self._reply_task = None

    def set_responder(self, responder: Callable[[], None] | None) -> None:
        """Let a speech-to-speech engine answer for this session: `respond()` (after a decided
        approval, injected text) then asks it for a response instead of running the text model;
        its answer arrives as turns the engine writes itself. None gives the text model back."""
        self._responder = responder

    async def _reply(self, speculation: SpeculativeReply | None = None) -> BotTurn | None:
        if self._responder is not None:
            self._responder()
            return None
        engine = self._require_engine()
        config = self.agent.llm_config()
        assert self._llm is not None
        plan = ReplyPlan(
            llm=self._llm if speculation is None else speculation.serving(self._llm),
            instructions=self.agent.instructions(),
            tools=list(self._tools.values()),
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            options=config.options,
            max_steps=self.spec.max_tool_steps,
            max_reply_chars=self.spec.guardrails.max_reply_chars,
            filler=ToolFiller.for_channel(self.spec.turn.tool_filler, self.channel, self.delivery),
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
        """Speak/send fixed text (a greeting, a tool's progress note) as a bot turn, joined to
        what the reply in flight already said."""
        if self._engine is not None:
            return self._engine.say(text)
        turn = self.turns.add_bot_text()
        turn.content = text
        turn.complete = True
        self.delivery.emitted(turn)
        self.bus.emit("bot_text_delta", turn=turn, delta=text)
        return turn

    async def wait_idle(self) -> None:
        """Wait until no reply or background work runs and every turn is written to storage."""
        async with self._reply_lock:
            pass
        await self.tasks.wait()
        await self.memory.flush()

    # -- approvals ---------------------------------------------------------------------------
    async def _on_approval_decided(self, record: ApprovalRecord) -> None:
        """A human decided: run the tool (or not) and let the model tell the user."""
        self.deliver_approval(record)

    def deliver_approval(self, record: ApprovalRecord) -> asyncio.Task[None]:
        """Apply a decision in this session: claim it (at most one applier anywhere), run the
        tool or report the refusal, then let the model tell the user."""
        self._check_open()
        return self.tasks.spawn(self._apply_approval(record), name="approval")

    async def _apply_approval(self, record: ApprovalRecord) -> None:
        executor = self._require_executor()
        tool = self._tools.get(record.tool)
        call_id = new_id("call")
        try:
            if tool is not None:
                outcome = await executor.run_approved(record, tool, self.run_context(call_id))
                content, is_error = outcome.content, outcome.is_error
            else:
                content = f"The {record.tool} tool is no longer available, so it was not run."
                is_error = True
                await self.approvals.mark_applied(record.id, content)
        except ApprovalStateError as exc:
            self.log.info("approval applied elsewhere", approval_id=record.id, why=str(exc))
            return
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

    def run_context(self, call_id: str, *, can_say: bool = True) -> RunContext:
        """What a tool run for `call_id` gets: the conversation, its subject and data, a
        bound log, and `say` unless the caller's engine speaks by other means (`can_say`
        False: the Realtime engine, whose model owns what is said)."""
        return RunContext(
            conversation_id=self.id,
            call_id=call_id,
            subject=self.subject,
            user_data=self.user_data,
            session=self,
            say=self._say_text if can_say else None,
            log=self.log.bind(call_id=call_id),
        )

    async def _say_text(self, text: str) -> None:
        """`RunContext.say`: a tool's progress note, spoken like any bot turn."""
        await self.say(text)

    def _maybe_summarize(self) -> None:
        summarizer = self._summarizer
        if summarizer is not None and summarizer.should_summarize(self.turns.all()):
            self.tasks.spawn(summarizer.summarize(self.turns), name="summary")

    def _background_error(self, exc: BaseException) -> None:
        self.bus.emit("error", error=exc, where="background")

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError(f"session {self.connection_id} is closed")

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
