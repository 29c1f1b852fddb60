"""Where a human's decision goes: to the caller, wherever they are.

The decision itself was already won by compare-and-set in the store (`ApprovalManager`), so
this only routes the outcome, and the session that applies it claims it again by
compare-and-set: a decision routed twice still runs its tool once. In order of preference:

1. the live connection that asked (on this worker, else on whichever worker answers the
   broadcast for it);
2. any other live session of the same conversation (a second call, a text session);
3. nobody is connected: the deciding worker applies it in a session of its own and texts the
   caller the outcome (`SmsService.deliver_offline`).
"""

from __future__ import annotations

from typing import Any

import structlog

from voxline.conversation.session import Session
from voxline.server.cluster import ClusterUnavailableError, WorkerLink
from voxline.server.live import LiveSessions
from voxline.server.sms_service import SmsService
from voxline.store.base import ApprovalRecord
from voxline.tasks import TaskGroup

log = structlog.get_logger("voxline.server.approvals")

APPROVAL_DECIDED = "approval_decided"
CONNECTION_LIVE = "connection_live"
PATIENCE = 0.5  # seconds to wait for another worker to say it holds the caller


class ApprovalRouter:
    def __init__(
        self, live: LiveSessions, link: WorkerLink, sms: SmsService, tasks: TaskGroup
    ) -> None:
        self._live = live
        self._link = link
        self._sms = sms
        self._tasks = tasks
        link.handle(APPROVAL_DECIDED, self._serve)
        # Finding the worker that holds a connection is this router's job, so it also tells
        # LiveSessions whether a connection is held anywhere (see LiveSessions.liveness).
        link.handle(CONNECTION_LIVE, self._serve_liveness)
        live.liveness = self.live_anywhere

    def after_decision(self, record: ApprovalRecord) -> None:
        """Route a decision made on this worker (the HTTP call returns at once)."""
        self._tasks.spawn(self.route(record), name="approval route")

    async def route(self, record: ApprovalRecord) -> str:
        """Deliver `record`; returns where it went: "here", "remote" or "offline"."""
        for any_session in (False, True):
            if self._deliver_here(record, any_session=any_session):
                return "here"
            payload = {"approval": record.model_dump(mode="json"), "any": any_session}
            try:
                answered = await self._link.request(APPROVAL_DECIDED, payload, PATIENCE)
            except ClusterUnavailableError:
                # No way to ask the other workers: applying it here (claimed by compare-and-set,
                # so at most once) and texting the caller beats leaving it undelivered.
                log.warning("broker down: approval applied here", approval_id=record.id)
                break
            if answered is not None:
                return "remote"
        await self._sms.deliver_offline(record)
        return "offline"

    def _deliver_here(self, record: ApprovalRecord, *, any_session: bool) -> bool:
        session = self._pick(record, any_session=any_session)
        if session is None:
            return False
        session.deliver_approval(record)
        log.info(
            "approval delivered to a live session",
            approval_id=record.id,
            connection=session.connection_id,
        )
        return True

    def _pick(self, record: ApprovalRecord, *, any_session: bool) -> Session | None:
        if record.connection_id is not None:
            session = self._live.get(record.connection_id)
            if session is not None and not session.closed:
                return session
        if not any_session:
            return None
        live = [s for s in self._live.for_conversation(record.conversation_id) if not s.closed]
        voice = [s for s in live if s.channel == "voice"]
        preferred = voice or live
        return preferred[-1] if preferred else None

    async def live_anywhere(self, conversation_id: str, connection_id: str) -> bool | None:
        """Whether a worker (this one included) holds this connection of the conversation;
        None when the other workers cannot be asked."""
        if self._holds(conversation_id, connection_id):
            return True
        payload = {"conversation": conversation_id, "connection": connection_id}
        try:
            return await self._link.request(CONNECTION_LIVE, payload, PATIENCE) is not None
        except ClusterUnavailableError:
            return None

    def _holds(self, conversation_id: object, connection_id: object) -> bool:
        if not isinstance(connection_id, str):
            return False
        session = self._live.get(connection_id)
        return session is not None and not session.closed and session.id == conversation_id

    async def _serve_liveness(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if self._holds(message.get("conversation"), message.get("connection")):
            return {"live": True}
        return None

    async def _serve(self, message: dict[str, Any]) -> dict[str, Any] | None:
        try:
            record = ApprovalRecord.model_validate(message.get("approval"))
        except ValueError:
            return None
        if self._deliver_here(record, any_session=bool(message.get("any"))):
            return {"delivered": True}
        return None
