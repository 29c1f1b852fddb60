"""The server's conversations: one live `Session` per conversation, shared by every channel.

A caller is one conversation per agent, keyed by their subject, so an SMS and a phone call from
the same number meet the same history. While anything uses a conversation (a call, an SMS being
answered, an approval being delivered) exactly one `Session` holds it: two sessions on one
conversation would interleave turn numbers. The hub also owns what sessions share: the store,
one `ApprovalManager` (decisions reach whichever session is live), the models, the SMS sender.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from voxline.agents.runtime import Agent, AgentRuntime, LLMConfig
from voxline.agents.spec import AgentSpec
from voxline.channels.relay_tools import relay_tools
from voxline.channels.twilio_relay import RelayCall
from voxline.channels.twilio_sms import ReplyCollector, SmsSender, split_message
from voxline.conversation.session import Session
from voxline.conversation.turns import new_id
from voxline.providers.llm.base import LLM
from voxline.providers.llm.registry import create_llm
from voxline.server.cluster import WorkerLink
from voxline.server.config import HostedAgent, LLMProvider, host_agent
from voxline.server.feed import Feeds
from voxline.settings import Settings
from voxline.store.base import (
    AgentRecord,
    ApprovalRecord,
    ConversationRecord,
    EventBroker,
    PlatformStore,
    Store,
)
from voxline.store.factory import open_broker, open_store
from voxline.tools.approvals import ApprovalManager
from voxline.tools.base import Tool
from voxline.tools.client import CLIENT_TOOLS_KEY

log = structlog.get_logger("voxline.server")

CONTACT_KEY = "twilio"  # conversation metadata: how to reach the caller later


@dataclass(frozen=True)
class Contact:
    """How to text a caller back: their address (as Twilio wrote it) and our number."""

    reply_to: str
    number: str


class _ChannelAgent:
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
class _Live:
    ready: asyncio.Future[Session]
    refs: int = 1


@dataclass
class HubStats:
    live_conversations: int
    active_calls: int
    draining: bool


class ConversationHub:
    def __init__(
        self,
        agents: dict[str, HostedAgent],
        settings: Settings,
        *,
        store: Store | None = None,
        llm: LLMProvider | None = None,
        sms_sender: SmsSender | None = None,
        broker: EventBroker | None = None,
    ) -> None:
        self.agents = agents  # hosted from files/code; agents defined over the API are in the store
        self.settings = settings
        self.sms_sender = sms_sender
        self.calls: dict[str, RelayCall] = {}  # conversation id -> live ConversationRelay call
        self._store = store
        self._owns_store = store is None
        self._approvals: ApprovalManager | None = None
        self._llm = llm
        self._llms: dict[str, LLM] = {}
        self._broker = broker
        self._owns_broker = broker is None
        self._link: WorkerLink | None = None
        self._feeds: Feeds | None = None
        self._live: dict[str, _Live] = {}
        self._closing: dict[str, asyncio.Task[None]] = {}
        self._resolve_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._active_calls = 0
        self._no_calls = asyncio.Event()
        self._no_calls.set()
        self.draining = False

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        if self._store is None:
            self._store = await open_store(settings=self.settings)
        self._approvals = ApprovalManager(self._store)
        if self._broker is None:
            self._broker = await open_broker(self.settings)
        self._link = WorkerLink(self._broker)
        await self._link.open()
        self._feeds = Feeds(self._broker, self._link)

    async def close(self, grace: float = 0.0) -> None:
        """Let background work (late SMS replies, approval deliveries) finish within `grace`,
        then close what is still live and release shared resources."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace or None)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for conversation_id, live in list(self._live.items()):
            if live.ready.done() and not live.ready.cancelled() and not live.ready.exception():
                await live.ready.result().close()
            self._live.pop(conversation_id, None)
        await asyncio.gather(*self._closing.values(), return_exceptions=True)
        if self._feeds is not None:
            await self._feeds.close()
        if self._link is not None:
            await self._link.close()
        if self._owns_broker and self._broker is not None:
            await self._broker.close()
        for model in self._llms.values():
            await model.aclose()
        close_sender = getattr(self.sms_sender, "aclose", None)
        if close_sender is not None:
            await close_sender()
        if self._owns_store and self._store is not None:
            await self._store.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the hub is not open")
        return self._store

    @property
    def platform(self) -> PlatformStore:
        """The store as a platform store (agents, listeners, keys): the REST API needs one."""
        store = self.store
        if not isinstance(store, PlatformStore):
            raise RuntimeError(f"{type(store).__name__} does not keep agents and listeners")
        return store

    @property
    def approvals(self) -> ApprovalManager:
        if self._approvals is None:
            raise RuntimeError("the hub is not open")
        return self._approvals

    @property
    def feeds(self) -> Feeds:
        if self._feeds is None:
            raise RuntimeError("the hub is not open")
        return self._feeds

    @property
    def link(self) -> WorkerLink:
        if self._link is None:
            raise RuntimeError("the hub is not open")
        return self._link

    @property
    def broker(self) -> EventBroker:
        if self._broker is None:
            raise RuntimeError("the hub is not open")
        return self._broker

    # -- agents ----------------------------------------------------------------------------
    async def resolve_agent(self, name: str) -> HostedAgent | None:
        """A hosted agent by name, else the API agent of that name as stored now: read at the
        start of every call, so an update over the API takes effect from the next call."""
        hosted = self.agents.get(name)
        if hosted is not None:
            return hosted
        if not isinstance(self.store, PlatformStore):
            return None
        record = await self.store.get_agent_by_name(name)
        return self.host_record(record) if record is not None else None

    async def agent_by_id(self, agent_id: str) -> HostedAgent | None:
        record = await self.platform.get_agent(agent_id)
        return self.host_record(record) if record is not None else None

    def host_record(self, record: AgentRecord) -> HostedAgent | None:
        try:
            return host_agent(Agent(AgentSpec.model_validate(record.spec)))
        except ValidationError:
            log.error("stored agent no longer validates; it cannot take calls", agent=record.id)
            return None

    def stats(self) -> HubStats:
        # A session still writing its last turns counts as live.
        live = len(self._live) + len(self._closing.keys() - self._live.keys())
        return HubStats(live, self._active_calls, self.draining)

    # -- calls and draining ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def active_call(self) -> AsyncIterator[None]:
        """Count a call in progress, so a graceful shutdown waits for it."""
        self._active_calls += 1
        self._no_calls.clear()
        try:
            yield
        finally:
            self._active_calls -= 1
            if self._active_calls == 0:
                self._no_calls.set()

    async def drain(self, grace: float) -> bool:
        """Refuse new calls and wait up to `grace` seconds for those in progress to end.
        Returns whether they all ended in time."""
        self.draining = True
        log.info("draining: waiting for calls in progress", calls=self._active_calls, grace=grace)
        try:
            async with asyncio.timeout(grace):
                await self._no_calls.wait()
        except TimeoutError:
            log.warning("grace period over; calls still in progress", calls=self._active_calls)
            return False
        return True

    # -- conversations ---------------------------------------------------------------------
    async def conversation_for(self, agent: HostedAgent, subject: str | None, channel: str) -> str:
        """The conversation of `subject` with `agent`, created on first contact. An unknown
        caller (no subject) always starts afresh: they must not share anyone's memory."""
        if subject is None:
            return new_id("conv")
        async with self._resolve_lock:  # two first contacts at once must not fork the history
            for record in await self.store.list_conversations(subject=subject, limit=100):
                if record.agent == agent.name:
                    return record.id
            conversation_id = new_id("conv")
            await self.store.upsert_conversation(
                ConversationRecord(
                    id=conversation_id, agent=agent.name, subject=subject, channel=channel
                )
            )
            return conversation_id

    async def has_history(self, conversation_id: str) -> bool:
        live = self._live.get(conversation_id)
        if live is not None and live.ready.done() and not live.ready.exception():
            return len(live.ready.result().turns) > 0
        return bool(await self.store.load_turns(conversation_id))

    @contextlib.asynccontextmanager
    async def lease(
        self,
        agent: HostedAgent,
        conversation_id: str,
        *,
        subject: str | None,
        channel: str,
        contact: Contact | None = None,
        on_open: Callable[[Session], None] | None = None,
        listener_id: str | None = None,
    ) -> AsyncIterator[Session]:
        """The live session of a conversation, started if nobody holds it; closed (every turn
        written through) when the last holder leaves. `on_open` sees a new session before it
        starts, i.e. before it replays approvals decided while nobody held it. While this lease
        lasts, the conversation's debug events also go to `listener_id`'s feed."""
        session = await self._acquire(agent, conversation_id, subject, channel, on_open)
        publisher = self.feeds.get(conversation_id)
        if publisher is not None and listener_id is not None:
            publisher.add_listener(listener_id)
        try:
            if contact is not None:
                await self._remember_contact(conversation_id, contact)
            yield session
        finally:
            if publisher is not None and listener_id is not None:
                publisher.remove_listener(listener_id)
            await self._release(conversation_id)

    async def _acquire(
        self,
        agent: HostedAgent,
        conversation_id: str,
        subject: str | None,
        channel: str,
        on_open: Callable[[Session], None] | None,
    ) -> Session:
        live = self._live.get(conversation_id)
        if live is not None:
            live.refs += 1
            try:
                return await asyncio.shield(live.ready)
            except BaseException:
                await self._release(conversation_id)
                raise
        live = _Live(ready=asyncio.get_running_loop().create_future())
        self._live[conversation_id] = live
        try:
            closing = self._closing.get(conversation_id)
            if closing is not None:
                await asyncio.shield(closing)  # its last turns must be stored before we load
            tools = relay_tools(agent.spec, agent.twilio, self.calls) if channel == "voice" else ()
            session = Session(
                _ChannelAgent(agent, tools),
                conversation_id=conversation_id,
                llm=self._model_for(agent.runtime),
                store=self.store,
                settings=self.settings,
                approvals=self.approvals,
                subject=subject,
                channel=channel,
                user_data={CLIENT_TOOLS_KEY: self.feeds},
            )
            self.feeds.start(session, agent.name)
            if on_open is not None:
                on_open(session)
            await session.start(greet=False)
        except BaseException as exc:
            self._live.pop(conversation_id, None)
            await self.feeds.finish(conversation_id)
            if isinstance(exc, Exception):
                live.ready.set_exception(exc)
                live.ready.exception()  # retrieved here, so an unawaited copy is not reported
            else:
                live.ready.cancel()
            raise
        live.ready.set_result(session)
        return session

    async def _release(self, conversation_id: str) -> None:
        live = self._live.get(conversation_id)
        if live is None:
            return
        live.refs -= 1
        if live.refs > 0:
            return
        del self._live[conversation_id]
        if not live.ready.done() or live.ready.cancelled() or live.ready.exception():
            return
        task = asyncio.create_task(self._close_session(live.ready.result()))
        self._closing[conversation_id] = task
        try:
            await asyncio.shield(task)
        finally:
            if self._closing.get(conversation_id) is task:
                del self._closing[conversation_id]

    async def _close_session(self, session: Session) -> None:
        try:
            await session.close()
        finally:
            await self.feeds.finish(session.id)

    def _model_for(self, runtime: AgentRuntime) -> LLM:
        if self._llm is not None:
            return self._llm(runtime)
        spec = runtime.llm_config().spec or self.settings.llm
        if spec not in self._llms:  # heavy models load once per process, not once per call
            self._llms[spec] = create_llm(spec, self.settings)
        return self._llms[spec]

    async def _remember_contact(self, conversation_id: str, contact: Contact) -> None:
        record = await self.store.get_conversation(conversation_id)
        if record is None:
            return
        known = {"reply_to": contact.reply_to, "number": contact.number}
        if record.metadata.get(CONTACT_KEY) != known:
            metadata = {**record.metadata, CONTACT_KEY: known}
            await self.store.upsert_conversation(record.model_copy(update={"metadata": metadata}))

    # -- SMS -------------------------------------------------------------------------------
    async def answer_sms(
        self,
        agent: HostedAgent,
        conversation_id: str,
        *,
        subject: str | None,
        contact: Contact,
        text: str,
        reply_within: float,
        listener_id: str | None = None,
    ) -> str | None:
        """The reply to one inbound message if it is ready within `reply_within` seconds;
        otherwise None, and the reply is texted through the sender when it is ready."""
        task = self.spawn(
            self._sms_turn(agent, conversation_id, subject, contact, text, listener_id)
        )
        try:
            return await asyncio.wait_for(asyncio.shield(task), reply_within)
        except TimeoutError:
            log.info("sms reply is slow; it will be sent through the REST API", waited=reply_within)

        async def send_late() -> None:
            await self.send_sms(contact, await task)

        self.spawn(send_late())
        return None

    async def _sms_turn(
        self,
        agent: HostedAgent,
        conversation_id: str,
        subject: str | None,
        contact: Contact,
        text: str,
        listener_id: str | None,
    ) -> str:
        collector = ReplyCollector()
        async with self.lease(
            agent,
            conversation_id,
            subject=subject,
            channel="sms",
            contact=contact,
            listener_id=listener_id,
        ) as session:
            collector.attach(session)
            try:
                await session.send_text(text)
                await session.wait_idle()  # includes approvals decided meanwhile
            finally:
                collector.detach()
        return collector.text()

    async def send_sms(self, contact: Contact, text: str) -> None:
        if not text:
            return
        if self.sms_sender is None:
            log.warning("no SMS sender configured: a reply was stored but not sent")
            return
        for body in split_message(text):
            await self.sms_sender.send(to=contact.reply_to, from_=contact.number, body=body)

    # -- approvals -------------------------------------------------------------------------
    def after_decision(self, record: ApprovalRecord) -> None:
        """A human decided. A live session has heard it already and tells the caller on its own
        channel; otherwise the conversation is woken to apply it and the outcome is texted."""
        if record.conversation_id not in self._live:
            self.spawn(self._deliver_offline(record.conversation_id))

    async def _deliver_offline(self, conversation_id: str) -> None:
        record = await self.store.get_conversation(conversation_id)
        agent = await self.resolve_agent(record.agent) if record is not None else None
        if record is None or agent is None:
            log.warning("approval decided for a conversation this server does not host")
            return
        collector = ReplyCollector()
        async with self.lease(
            agent, conversation_id, subject=record.subject, channel="sms", on_open=collector.attach
        ) as session:
            await session.wait_idle()
        collector.detach()
        contact = record.metadata.get(CONTACT_KEY)
        if not isinstance(contact, dict) or not contact.get("reply_to"):
            log.warning("approval outcome not sent: no way to reach this caller")
            return
        await self.send_sms(
            Contact(contact["reply_to"], contact.get("number", "")), collector.text()
        )

    # -- background work -------------------------------------------------------------------
    def spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task failed", exc_info=exc)
