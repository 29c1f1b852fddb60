"""Texting callers: answering an inbound SMS, and reaching a caller who is no longer connected.

An inbound SMS is its own live session (one exchange, channel `sms`) over the caller's memory:
its reply goes back as TwiML or, when slow, through the REST API, and never to a call the same
caller may have open at that moment. That call's session is not interrupted; its model sees the
SMS exchange on its next turn, because both share the memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from voxline.channels.twilio_sms import ReplyCollector, SmsSender, split_message
from voxline.conversation.session import Session
from voxline.conversation.turns import new_id
from voxline.server.config import HostedAgent
from voxline.server.live import LiveSessions, SessionOptions
from voxline.store.base import ApprovalRecord, Store
from voxline.tasks import TaskGroup

log = structlog.get_logger("voxline.server.sms")

CONTACT_KEY = "twilio"  # conversation metadata: how to reach the caller later


@dataclass(frozen=True)
class Contact:
    """How to text a caller back: their address (as Twilio wrote it) and our number."""

    reply_to: str
    number: str


class SmsService:
    def __init__(
        self,
        live: LiveSessions,
        store: Store,
        sender: SmsSender | None,
        resolve_agent: Callable[[str], Awaitable[HostedAgent | None]],
        tasks: TaskGroup,
    ) -> None:
        self._live = live
        self._store = store
        self.sender = sender
        self._resolve_agent = resolve_agent
        self._tasks = tasks

    async def remember_contact(self, conversation_id: str, contact: Contact) -> None:
        """Keep how to text this caller, for outcomes that arrive after they hang up."""
        record = await self._store.get_conversation(conversation_id)
        if record is None:
            return
        known = {"reply_to": contact.reply_to, "number": contact.number}
        if record.metadata.get(CONTACT_KEY) != known:
            metadata = {**record.metadata, CONTACT_KEY: known}
            await self._store.upsert_conversation(record.model_copy(update={"metadata": metadata}))

    async def answer(
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
        task = self._tasks.spawn(
            self._exchange(agent, conversation_id, subject, contact, text, listener_id)
        )
        try:
            return await asyncio.wait_for(asyncio.shield(task), reply_within)
        except TimeoutError:
            log.info("sms reply is slow; it will be sent through the REST API", waited=reply_within)

        async def send_late() -> None:
            await self.send(contact, await task)

        self._tasks.spawn(send_late())
        return None

    async def _exchange(
        self,
        agent: HostedAgent,
        conversation_id: str,
        subject: str | None,
        contact: Contact,
        text: str,
        listener_id: str | None,
    ) -> str:
        collector = ReplyCollector()
        options = SessionOptions(
            channel="sms", connection_id=new_id("sms"), listener_id=listener_id
        )
        async with self._live.open(agent, conversation_id, subject=subject, options=options) as s:
            await self.remember_contact(conversation_id, contact)
            collector.attach(s)
            try:
                await s.send_text(text)
                await s.wait_idle()  # includes approvals decided meanwhile
            finally:
                collector.detach()
        return collector.text()

    async def send(self, contact: Contact, text: str) -> None:
        if not text:
            return
        if self.sender is None:
            log.warning("no SMS sender configured: a reply was stored but not sent")
            return
        for body in split_message(text):
            await self.sender.send(to=contact.reply_to, from_=contact.number, body=body)

    async def deliver_offline(self, record: ApprovalRecord) -> None:
        """Nobody is connected: apply the decision in a session of its own and text the caller
        what the model says about it."""
        conversation = await self._store.get_conversation(record.conversation_id)
        agent = await self._resolve_agent(conversation.agent) if conversation else None
        if conversation is None or agent is None:
            log.warning("approval decided for a conversation this server does not host")
            return
        collector = ReplyCollector()
        options = SessionOptions(channel="sms", connection_id=new_id("approval"))
        async with self._live.open(
            agent, record.conversation_id, subject=conversation.subject, options=options
        ) as session:
            collector.attach(session)
            await _apply(session, record)
            collector.detach()
        contact = conversation.metadata.get(CONTACT_KEY)
        if not isinstance(contact, dict) or not contact.get("reply_to"):
            log.warning("approval outcome not sent: no way to reach this caller")
            return
        await self.send(Contact(contact["reply_to"], contact.get("number", "")), collector.text())


async def _apply(session: Session, record: ApprovalRecord) -> None:
    await session.deliver_approval(record)
    await session.wait_idle()
