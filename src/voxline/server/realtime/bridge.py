"""One Realtime socket: client events in, the agent's live session behind, server events out.

The bridge is bookkeeping, not a pipeline. It opens the socket's voxline session (through the
hub, like any call's) when the client first needs it, and turns client events into session and
pipeline calls: `user_audio.py` for the audio buffer and VAD, `edits.py` for conversation items,
here for the session configuration and responses. What the session and the pipeline do in turn
becomes the Realtime event sequence in `replies.py`.

Everything the client does is serialised under one lock, and session changes that remake the
call (new client tools: a new session on the same conversation) or its pipeline (new formats or
end-of-turn silence) wait for a quiet moment, so neither ever races an event or a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import structlog

from voxline.agents.spec import AgentSpec
from voxline.conversation.session import SessionClosedError
from voxline.conversation.state import SessionState
from voxline.conversation.turns import Turn, UserTurn, new_id
from voxline.server.config import HostedAgent
from voxline.server.hub import ConversationHub
from voxline.server.realtime.agent import RealtimeAgent
from voxline.server.realtime.call import RealtimeCall, pipeline_key
from voxline.server.realtime.client_tools import ClientCalls
from voxline.server.realtime.config import SessionConfig
from voxline.server.realtime.edits import ItemEdits
from voxline.server.realtime.items import Item, ItemLog
from voxline.server.realtime.outbox import DROPPABLE, Outbox
from voxline.server.realtime.protocol import (
    MAX_CLIENT_EVENT_BYTES,
    AudioAppend,
    AudioClear,
    AudioCommit,
    ClientError,
    ClientEvent,
    Dialect,
    ItemCreate,
    ItemDelete,
    ItemRetrieve,
    ItemTruncate,
    ResponseCancel,
    ResponseCreate,
    ResponseParams,
    SessionUpdate,
    Wire,
    parse_client_event,
)
from voxline.server.realtime.replies import Replies
from voxline.server.realtime.responses import Response
from voxline.server.realtime.user_audio import InputAudio
from voxline.tasks import TaskGroup
from voxline.voice.providers import SpeechProviders

log = structlog.get_logger("voxline.realtime")

S = SessionState
_REPLYING = frozenset({S.THINKING, S.CALLING_TOOLS, S.SPEAKING})
WATCH_SECONDS = 0.04  # how often a response is checked for having finished


class SpeechSource(Protocol):
    """Where calls get their speech models (the server's `SpeechPool`: loaded once)."""

    async def get(self, spec: AgentSpec) -> SpeechProviders: ...


class RealtimeBridge:
    def __init__(
        self,
        hub: ConversationHub,
        hosted: HostedAgent,
        speech: SpeechSource,
        dialect: Dialect,
        outbox: Outbox,
    ) -> None:
        self.hub = hub
        self.agent = RealtimeAgent(hosted)
        self.wire = Wire(dialect)
        self.outbox = outbox
        self.config = SessionConfig.for_agent(hosted.spec)
        self.session_id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.connection_id = new_id("rt")  # kept when the session is reopened for new tools
        self.items = ItemLog()
        self.calls = ClientCalls()
        self.input = InputAudio(self)
        self.edits = ItemEdits(self)
        self.tasks = TaskGroup("realtime socket")
        self.call: RealtimeCall | None = None
        self.replies = Replies(self)
        self.log = log.bind(agent=hosted.name, conversation_id=self.conversation_id)
        self._speech_source = speech
        self._speech: asyncio.Future[SpeechProviders] | None = None
        self.quiet_adds = False  # a user turn being added is not a VAD utterance's
        self._respond_task: asyncio.Task[None] | None = None
        self._pending_reopen = False
        self._pending_rebuild = False
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._offs: list[Any] = []
        self.closing = False

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Greet the client with `session.created`, and start loading the speech models."""
        self._load_speech()
        self.emit("session.created", session=self._render_session())
        if self.wire.beta:
            conversation = {"id": self.conversation_id, "object": "realtime.conversation"}
            self.emit("conversation.created", conversation=conversation)
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        """The client is gone: stop the reply first (so a failed client call does not send
        the model round again), fail the calls it owed, then close the session."""
        self.closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.call is not None:
            self.call.session.interrupt()
        self.calls.fail_all("the Realtime client disconnected")
        await self.tasks.close()
        await self._close_call()
        if self.outbox.dropped:
            self.log.warning("deltas dropped for a slow client", dropped=self.outbox.dropped)

    async def ensure_call(self) -> RealtimeCall:
        """The voxline session behind this socket, opened on first need (by then the client
        has usually sent its `session.update`, so its tools are known)."""
        if self.call is not None:
            return self.call
        speech = await self._speech_models()
        self.call = await RealtimeCall.open(
            self.hub,
            self.agent,
            self.conversation_id,
            self.connection_id,
            speech,
            self.config,
            self.calls,
            sink=self.replies,
            on_gate=self.input.on_gate,
        )
        session = self.call.session
        self._offs = self.replies.subscribe(session)
        self.hub.calls.add(session.connection_id, self.conversation_id, self)
        feed = self.hub.feeds.get(self.conversation_id)
        if feed is not None:
            feed.publish("call_started", channel=session.channel, caller=None)
        self.log.info("realtime session opened", connection=session.connection_id)
        return self.call

    async def _close_call(self) -> None:
        call, self.call = self.call, None
        if call is None:
            return
        for off in self._offs:
            off()
        self._offs = []
        self.hub.calls.remove(call.session.connection_id)
        feed = self.hub.feeds.get(self.conversation_id)
        if feed is not None:
            feed.publish("call_ended", channel=call.session.channel, turns=len(call.session.turns))
        await call.close()

    def _load_speech(self) -> None:
        spec = self.agent.spec
        self._speech = asyncio.ensure_future(self._speech_source.get(spec))
        self._speech.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _speech_models(self) -> SpeechProviders:
        if self._speech is None or (self._speech.done() and self._speech.exception()):
            self._load_speech()  # the pool retries a model that failed to load
        assert self._speech is not None
        try:
            return await asyncio.shield(self._speech)
        except Exception as exc:
            self.log.error("speech models could not be loaded", error=str(exc))
            raise ClientError(
                "speech_unavailable", f"speech models are not available: {exc}", kind="server_error"
            ) from exc

    # -- client events ------------------------------------------------------------------------
    async def handle(self, text: str) -> None:
        """One client frame; anything wrong with it becomes an `error` event."""
        event: ClientEvent | None = None
        try:
            if len(text) > MAX_CLIENT_EVENT_BYTES or len(text.encode()) > MAX_CLIENT_EVENT_BYTES:
                raise ClientError(
                    "event_too_large",
                    f"client events may be at most {MAX_CLIENT_EVENT_BYTES} bytes; send audio in "
                    "smaller appends",
                )
            event = parse_client_event(text)
            async with self._lock:
                await self._dispatch(event)
        except ClientError as error:
            if error.event_id is None and event is not None:
                error.event_id = event.event_id
            self.refuse(error)

    def refuse(self, error: ClientError) -> None:
        self.log.info("client event refused", code=error.code, reason=error.message)
        self.outbox.put(self.wire.error(error))

    async def _dispatch(self, event: ClientEvent) -> None:
        if isinstance(event, AudioAppend):
            await self.input.append(event)
        elif isinstance(event, SessionUpdate):
            await self._session_update(event)
        elif isinstance(event, AudioCommit):
            await self.input.commit()
        elif isinstance(event, AudioClear):
            self.input.clear()
        elif isinstance(event, ItemCreate):
            await self.edits.create(event)
        elif isinstance(event, ItemTruncate):
            self.edits.truncate(event)
        elif isinstance(event, ItemDelete):
            self.edits.delete(event)
        elif isinstance(event, ItemRetrieve):
            self.edits.retrieve(event)
        elif isinstance(event, ResponseCreate):
            await self._response_create(event.response)
        elif isinstance(event, ResponseCancel):
            self._response_cancel(event)

    async def _session_update(self, event: SessionUpdate) -> None:
        old = self.config
        new = old.updated(event.session, self.wire.dialect)
        formats = (new.input_format, new.output_format) != (old.input_format, old.output_format)
        if formats and self.call is not None and not self._quiet():
            raise ClientError(
                "session_busy",
                "audio formats cannot change while a response or the user's speech is in progress",
                param="session.audio",
            )
        self.config = new
        self.agent.session_instructions = new.instructions
        if formats:
            self.input.reset()  # buffered audio was in the old format
        self.emit("session.updated", session=self._render_session())
        if self.call is not None:
            self._pending_reopen |= new.tools != self.call.tools
            self._pending_rebuild |= pipeline_key(new) != self.call.key
            await self._apply_pending()

    async def _response_create(self, params: ResponseParams | None) -> None:
        if params is not None and params.conversation == "none":
            raise ClientError(
                "unsupported_value",
                "out-of-band responses (conversation: none) are not supported here",
                param="response.conversation",
            )
        if params is not None and params.input is not None:
            raise ClientError(
                "unsupported_value", "response.input is not supported here", param="response.input"
            )
        call = await self.ensure_call()
        absorb, self.replies.absorb_next_create = self.replies.absorb_next_create, False
        replying = self.replying
        active = self.replies.response
        if active is not None:
            if absorb:
                return  # the reply carried on after the client's function output: it is this one
            raise ClientError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {active.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        response = self.replies.open(params, awaiting_reply=not replying)
        if replying:
            return  # a reply waiting on client function calls speaks into this response
        if params is not None and params.instructions is not None:
            self.agent.response_instructions = params.instructions
        pending = self.input.pending()
        self._respond_task = self.tasks.spawn(
            self._respond(call, response, pending), name="respond"
        )

    async def _respond(
        self, call: RealtimeCall, response: Response, pending: list[asyncio.Task[None]]
    ) -> None:
        try:
            if pending:  # audio committed just before must be a turn before the model answers
                await asyncio.gather(*pending, return_exceptions=True)
            await call.session.respond()
        except SessionClosedError:
            pass
        finally:
            response.awaiting_reply = False

    def _response_cancel(self, event: ResponseCancel) -> None:
        response = self.replies.response
        if response is None or (event.response_id and event.response_id != response.id):
            raise ClientError(
                "response_cancel_not_active",
                "There is no active response to cancel.",
                param="response_id",
            )
        self.cancel("client_cancelled")

    def cancel(self, reason: str) -> None:
        """End the active response now: audio cleared, the reply stopped and trimmed."""
        response = self.replies.response
        task = self._respond_task
        if (
            task is not None
            and not task.done()
            and response is not None
            and response.awaiting_reply
        ):
            task.cancel()
        call = self.call
        if call is not None:
            call.pipeline.cut_off()
            self.outbox.drop_audio()
            self.replies.cancel_reason = reason
            try:
                call.session.interrupt()
            finally:
                self.replies.cancel_reason = None
        if response is not None:
            self.replies.finish(response, "cancelled", reason)

    def inject(self, text: str, *, as_system: bool = False) -> None:
        """Text from an operator over the API (`LiveCall`): the agent stops talking and answers
        it, or acts on it as an instruction, in a response the server opens. The client sees
        a user (or system) item appear, as if another party had added it."""
        call = self.call
        if call is None or self.closing:
            return
        if self.replies.response is not None:
            self.cancel("turn_detected")  # a new turn cuts the agent off, as speech would
        call.session.interrupt()
        if as_system:
            turn: Turn = call.session.turns.add_system(text)
            item = Item("message", "system", content_type="input_text", text=text)
        else:
            turn = self.add_user_text(text)
            item = Item("message", "user", content_type="input_text", text=text)
        item.turn_ids.append(turn.id)
        self.announce_added(item, self.items.add(item))
        self.tasks.spawn(_answer(call), name="injected")

    # -- what other modules need ----------------------------------------------------------------
    def emit(self, kind: str, /, **fields: Any) -> None:
        text = self.wire.event(kind, **fields)
        if text is not None:
            self.outbox.put(text, droppable=kind in DROPPABLE)

    def announce_added(self, item: Item, previous: str | None) -> None:
        """`conversation.item.added` + `.done` for an item that is complete as it is added."""
        shown = item.render(beta=self.wire.beta)
        self.emit("conversation.item.added", previous_item_id=previous, item=shown)
        self.emit("conversation.item.done", item=shown)

    def add_user_text(self, text: str) -> UserTurn:
        """A user turn this bridge made itself (not one whose VAD item awaits a transcript)."""
        call = self.call
        assert call is not None
        self.quiet_adds = True
        try:
            turn = call.session.turns.add_user_text(text, channel=call.session.channel)
        finally:
            self.quiet_adds = False
        self.replies.absorb_next_create = False
        return turn

    @property
    def replying(self) -> bool:
        call = self.call
        return call is not None and call.session.state in _REPLYING

    def _quiet(self) -> bool:
        """Nothing is being said, heard, transcribed or waited for."""
        call = self.call
        return (
            self.replies.response is None
            and not self.replying
            and not self.input.busy
            and not self.replies.client_waiting
            and (call is None or call.idle)
        )

    async def _apply_pending(self) -> None:
        """Session changes that remake the call or its pipeline, once the call is quiet."""
        call = self.call
        if call is None:
            self._pending_reopen = self._pending_rebuild = False
            return
        if not (self._pending_reopen or self._pending_rebuild) or not self._quiet():
            return
        if self._pending_reopen:
            self._pending_reopen = self._pending_rebuild = False
            await self._close_call()
            await self.ensure_call()
        else:
            self._pending_rebuild = False
            await call.rebuild(self.config)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                self.replies.settle()
                if self._pending_reopen or self._pending_rebuild:
                    async with self._lock:
                        await self._apply_pending()
            except Exception:
                self.log.exception("realtime bookkeeping failed")

    def _render_session(self) -> dict[str, Any]:
        return self.config.render(
            self.wire.dialect, session_id=self.session_id, model=self.agent.name
        )


async def _answer(call: RealtimeCall) -> None:
    with contextlib.suppress(SessionClosedError):  # the socket closed first: nobody to answer
        await call.session.respond()
