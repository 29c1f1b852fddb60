"""This worker's live sessions, and the conversation memories they share.

A live session is one connection: a call (by CallSid / stream), a browser socket, one SMS
exchange, one API text session. Each gets its own `Session` (its own reply, events and
delivery), so a reply reaches only the connection whose input caused it. Sessions of the same
conversation on this worker share one `ConversationMemory`, opened by the first and written
through and closed when the last leaves; a session that arrives while the previous memory is
still writing its last turns waits for them, so it loads everything.

Across workers nothing here is shared: memories meet in the store (unique turn positions, see
`conversation/memory.py`) and deliveries travel over the broker (`approval_router.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from voxline.agents.runtime import LLMConfig
from voxline.agents.spec import AgentSpec
from voxline.conversation.memory import ConversationMemory
from voxline.conversation.session import Session
from voxline.guardrails.audit import AuditTrail
from voxline.guardrails.storage import record_transform
from voxline.providers.llm.base import LLM
from voxline.server.config import HostedAgent
from voxline.server.feed import Feeds
from voxline.settings import Settings
from voxline.store.base import ApprovalStatus, ConversationRecord, Store
from voxline.tools.approvals import ApprovalManager
from voxline.tools.base import Tool
from voxline.tools.client import CLIENT_TOOLS_KEY

log = structlog.get_logger("voxline.server.live")

MEMORY_CLOSE_TIMEOUT = 10.0  # seconds a memory may take to write its last turns

# Whether a connection of a conversation is live on any worker: True, False, or None when that
# cannot be known now (the broker is down).
Liveness = Callable[[str, str], Awaitable[bool | None]]
# Watches a session from its opening to its close (metrics, traces): returns how to stop.
SessionObserver = Callable[[Session], Callable[[], None]]


class ChannelAgent:
    """An agent plus channel tools (call control on voice), seen by the session as one agent."""

    def __init__(self, agent: HostedAgent, extra: Sequence[Tool]) -> None:
        self._base = agent.runtime
        self.spec: AgentSpec = agent.spec
        self._extra = list(extra)

    def instructions(self) -> str:
        return self._base.instructions()

    def llm_config(self) -> LLMConfig:
        return self._base.llm_config()

    def tools(self) -> Sequence[Tool]:
        own = list(self._base.tools())
        names = {t.name for t in own}
        return [*own, *(t for t in self._extra if t.name not in names)]


@dataclass
class _Shared:
    memory: ConversationMemory
    ready: asyncio.Future[None]
    refs: int = 1
    sessions: list[Session] = field(default_factory=list)


@dataclass(frozen=True)
class SessionOptions:
    """How one connection's session is made: its channel, its id, extra tools."""

    channel: str
    connection_id: str | None = None
    tools: Sequence[Tool] = ()
    on_open: Callable[[Session], None] | None = None
    listener_id: str | None = None


class LiveSessions:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        approvals: ApprovalManager,
        feeds: Feeds,
        model_for: Callable[[HostedAgent], LLM],
    ) -> None:
        self._store = store
        self._settings = settings
        self._approvals = approvals
        self._feeds = feeds
        self._model_for = model_for
        self._shared: dict[str, _Shared] = {}
        self._closing: dict[str, asyncio.Task[None]] = {}
        self._sessions: dict[str, Session] = {}  # connection id -> session
        # Set by whoever can ask the other workers (the approval router): lets a memory just
        # loaded tell an exchange in progress elsewhere from one a killed worker left behind.
        self.liveness: Liveness | None = None
        self.observers: list[SessionObserver] = []  # told of every session opened here

    # -- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Conversations live here, counting those still writing their last turns."""
        return len(self._shared) + len(self._closing.keys() - self._shared.keys())

    def get(self, connection_id: str) -> Session | None:
        return self._sessions.get(connection_id)

    def for_conversation(self, conversation_id: str) -> list[Session]:
        """The live sessions of a conversation here, oldest first."""
        shared = self._shared.get(conversation_id)
        return list(shared.sessions) if shared is not None else []

    def memory(self, conversation_id: str) -> ConversationMemory | None:
        shared = self._shared.get(conversation_id)
        if shared is None or not shared.ready.done() or shared.ready.exception():
            return None
        return shared.memory

    # -- opening ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def open(
        self,
        agent: HostedAgent,
        conversation_id: str,
        *,
        subject: str | None,
        options: SessionOptions,
    ) -> AsyncIterator[Session]:
        """A new live session on the conversation's shared memory, closed when the block
        ends (its tasks cancelled and awaited); the memory is written through when the last
        session of the conversation leaves."""
        connection_id = options.connection_id
        if connection_id is not None and connection_id in self._sessions:
            log.warning("a connection id is already live here; this one gets its own")
            connection_id = None
        memory = await self._acquire(agent, conversation_id, subject, options.channel)
        try:
            session = Session(
                ChannelAgent(agent, options.tools),
                memory=memory,
                connection_id=connection_id,
                llm=self._model_for(agent),
                store=self._store,
                settings=self._settings,
                approvals=self._approvals,
                subject=subject,
                channel=options.channel,
                user_data={CLIENT_TOOLS_KEY: self._feeds},
                own_approvals=False,
            )
            AuditTrail(self._store).watch(session)
            publisher = self._feeds.start(session, agent.name)
            if options.listener_id is not None:
                publisher.add_listener(options.listener_id)
            detachers = [observe(session) for observe in self.observers]
            try:
                if options.on_open is not None:
                    options.on_open(session)
                await session.start(greet=False)
                self._sessions[session.connection_id] = session
                shared = self._shared[conversation_id]
                shared.sessions.append(session)
                if len(shared.sessions) == 1:
                    await self._apply_waiting_decisions(session)
                yield session
            finally:
                self._sessions.pop(session.connection_id, None)
                current = self._shared.get(conversation_id)
                if current is not None and session in current.sessions:
                    current.sessions.remove(session)
                try:
                    await session.close()
                finally:
                    for detach in detachers:
                        detach()
                    if options.listener_id is not None:
                        publisher.remove_listener(options.listener_id)
                    await self._feeds.finish(session)
        finally:
            await self._release(conversation_id)

    async def _apply_waiting_decisions(self, session: Session) -> None:
        """Decisions made while nobody was connected and not yet told to the model: the
        conversation's first session applies them (a claim makes sure only one does)."""
        for record in await self._store.list_approvals(conversation_id=session.id):
            waiting = record.status != ApprovalStatus.PENDING and not record.applied
            if waiting and record.claimed_by is None:
                session.deliver_approval(record)

    async def _acquire(
        self, agent: HostedAgent, conversation_id: str, subject: str | None, channel: str
    ) -> ConversationMemory:
        shared = self._shared.get(conversation_id)
        if shared is not None:
            shared.refs += 1
            try:
                await asyncio.shield(shared.ready)
            except BaseException:
                await self._release(conversation_id)
                raise
            return shared.memory
        shared = _Shared(
            ConversationMemory(conversation_id), asyncio.get_running_loop().create_future()
        )
        self._shared[conversation_id] = shared
        try:
            closing = self._closing.get(conversation_id)
            if closing is not None:
                await asyncio.shield(closing)  # its last turns must be stored before we load
            record = ConversationRecord(
                id=conversation_id, agent=agent.name, subject=subject, channel=channel
            )
            await shared.memory.open(
                self._store, record, transform=record_transform(agent.spec.guardrails)
            )
            await self._settle_abandoned(shared.memory)
        except BaseException as exc:
            self._shared.pop(conversation_id, None)
            if isinstance(exc, Exception):
                shared.ready.set_exception(exc)
                shared.ready.exception()  # retrieved, so an unawaited copy is not reported
            else:
                shared.ready.cancel()
            raise
        shared.ready.set_result(None)
        return shared.memory

    async def _settle_abandoned(self, memory: ConversationMemory) -> None:
        """Exchanges the loaded history shows in progress on connections no worker holds (a
        worker killed mid-reply) are settled, so their turns are not hidden for ever."""
        liveness = self.liveness
        unsettled = sorted(memory.unsettled_connections() - self._sessions.keys())
        if liveness is None or not unsettled:
            return
        try:
            answers = await asyncio.gather(*(liveness(memory.id, c) for c in unsettled))
        except Exception:  # not knowing must not keep the session from opening
            log.warning("could not ask which connections are live", exc_info=True)
            return
        for connection, live in zip(unsettled, answers, strict=True):
            if live is False:
                memory.settle_abandoned(connection)

    async def _release(self, conversation_id: str) -> None:
        shared = self._shared.get(conversation_id)
        if shared is None:
            return
        shared.refs -= 1
        if shared.refs > 0:
            return
        del self._shared[conversation_id]
        if not shared.ready.done() or shared.ready.cancelled() or shared.ready.exception():
            return
        task = asyncio.create_task(self._close_memory(shared.memory))
        self._closing[conversation_id] = task
        try:
            await asyncio.shield(task)
        finally:
            if self._closing.get(conversation_id) is task:
                del self._closing[conversation_id]

    async def _close_memory(self, memory: ConversationMemory) -> None:
        try:
            async with asyncio.timeout(MEMORY_CLOSE_TIMEOUT):
                await memory.close()
        except TimeoutError:
            log.error("storage did not take a conversation's last turns", conversation=memory.id)

    async def close(self) -> None:
        """Close every live session (shutdown after the grace period)."""
        for session in list(self._sessions.values()):
            await session.close()
        for shared in list(self._shared.values()):
            if (
                shared.ready.done()
                and not shared.ready.cancelled()
                and not shared.ready.exception()
            ):
                await self._close_memory(shared.memory)
        await asyncio.gather(*self._closing.values(), return_exceptions=True)
