"""The worker's front desk: agents, conversations, and the collaborators that serve them.

A caller is one conversation (one memory) per agent, keyed by their subject, so an SMS and a
phone call from the same number meet the same history. Each connection to it is its own live
session (`LiveSessions`); an SMS exchange is answered by `SmsService`; a human's decision on an
approval is routed to the caller by `ApprovalRouter`; live calls are in `calls` for call control
and text injection. The hub opens and closes them, resolves agents (hosted or stored), keeps
one model per spec for the process, and counts calls in progress for a graceful drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from voxline.agents.policy import enforce_agent
from voxline.agents.runtime import Agent
from voxline.agents.spec import AgentSpec
from voxline.channels.twilio_sms import SmsSender
from voxline.conversation.session import Session
from voxline.conversation.turns import new_id
from voxline.providers.llm.base import LLM
from voxline.providers.llm.registry import create_llm
from voxline.server.approval_router import ApprovalRouter
from voxline.server.cluster import WorkerLink
from voxline.server.config import HostedAgent, LLMProvider, host_agent
from voxline.server.feed import Feeds
from voxline.server.live import LiveSessions, SessionOptions
from voxline.server.live_calls import LiveCalls
from voxline.server.sms_service import CONTACT_KEY, Contact, SmsService
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
from voxline.tasks import TaskGroup
from voxline.tools.approvals import ApprovalManager

log = structlog.get_logger("voxline.server")

__all__ = ["CONTACT_KEY", "Contact", "ConversationHub", "HubStats", "SessionOptions"]


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
        self.calls: LiveCalls[Any] = LiveCalls()
        self.tasks = TaskGroup("hub")
        self._store = store
        self._owns_store = store is None
        self._approvals: ApprovalManager | None = None
        self._llm = llm
        self._llms: dict[str, LLM] = {}
        self._broker = broker
        self._owns_broker = broker is None
        self._link: WorkerLink | None = None
        self._feeds: Feeds | None = None
        self._live: LiveSessions | None = None
        self._sms: SmsService | None = None
        self._router: ApprovalRouter | None = None
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
        self._live = LiveSessions(
            self._store, self.settings, self._approvals, self._feeds, self._model_for
        )
        self._sms = SmsService(
            self._live, self._store, self.sms_sender, self.resolve_agent, self.tasks
        )
        self._router = ApprovalRouter(self._live, self._link, self._sms, self.tasks)

    async def close(self, grace: float = 0.0) -> None:
        """Let background work (late SMS replies, approval deliveries) finish within `grace`,
        then close what is still live and release shared resources."""
        await self.tasks.close(grace)
        if self._live is not None:
            await self._live.close()
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

    @property
    def live(self) -> LiveSessions:
        if self._live is None:
            raise RuntimeError("the hub is not open")
        return self._live

    @property
    def sms(self) -> SmsService:
        if self._sms is None:
            raise RuntimeError("the hub is not open")
        return self._sms

    @property
    def approval_router(self) -> ApprovalRouter:
        if self._router is None:
            raise RuntimeError("the hub is not open")
        return self._router

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
            spec = AgentSpec.model_validate(record.spec)
            enforce_agent(spec, self.settings)  # the operator's allow-list may have changed
            return host_agent(Agent(spec))
        except ValidationError:
            log.error("stored agent no longer validates; it cannot take calls", agent=record.id)
            return None

    def stats(self) -> HubStats:
        live = len(self._live) if self._live is not None else 0
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
        caller (no subject) always starts afresh: they must not share anyone's memory.

        A first contact gets an id derived from (agent, subject), so two first contacts at once,
        on one worker or two, land on the same conversation without any lock."""
        if subject is None:
            return new_id("conv")
        for record in await self.store.list_conversations(subject=subject, limit=100):
            if record.agent == agent.name:
                return record.id
        digest = hashlib.sha256(f"{agent.name}\n{subject}".encode()).hexdigest()[:20]
        conversation_id = f"conv_{digest}"
        if await self.store.get_conversation(conversation_id) is None:
            await self.store.upsert_conversation(
                ConversationRecord(
                    id=conversation_id, agent=agent.name, subject=subject, channel=channel
                )
            )
        return conversation_id

    async def has_history(self, conversation_id: str) -> bool:
        memory = self.live.memory(conversation_id)
        if memory is not None:
            return len(memory.turns) > 0
        return bool(await self.store.load_turns(conversation_id))

    @contextlib.asynccontextmanager
    async def connect(
        self,
        agent: HostedAgent,
        conversation_id: str,
        *,
        subject: str | None,
        options: SessionOptions,
        contact: Contact | None = None,
    ) -> AsyncIterator[Session]:
        """A live session for one connection (a call, a socket, a text session) on the
        conversation's memory; closed, with every task it started, when the block ends."""
        async with self.live.open(agent, conversation_id, subject=subject, options=options) as s:
            if contact is not None:
                await self.sms.remember_contact(conversation_id, contact)
            yield s

    def _model_for(self, agent: HostedAgent) -> LLM:
        if self._llm is not None:
            return self._llm(agent.runtime)
        spec = agent.runtime.llm_config().spec or self.settings.llm
        if spec not in self._llms:  # heavy models load once per process, not once per call
            self._llms[spec] = create_llm(spec, self.settings)
        return self._llms[spec]

    # -- approvals -----------------------------------------------------------------
    def after_decision(self, record: ApprovalRecord) -> None:
        """A human decided on this worker: route the outcome to the caller, wherever they are."""
        self.approval_router.after_decision(record)

    def spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        return self.tasks.spawn(work)
