"""One Realtime socket: client events in, the agent's live session behind, server events out.

The bridge is bookkeeping, not a pipeline. Client events become session and pipeline calls
(`user_audio.py` for the audio buffer, `edits.py` for conversation items, here for the session
and responses); the session's own events (a reply starting, text deltas, tool calls, an
interruption) and the pipeline's audio become the Realtime event sequence (`responses.py`).

Responses are where the two models meet. A voxline reply runs the model/tool loop to the end;
a Realtime response ends at a client function call. So a response is finished when its audio
has all gone out and either the reply is over or it waits only on calls the client must
answer; the client's `function_call_output` lets the same reply carry on, into the response the
client then asks for (or, if the reply speaks first, into one the server opens, which absorbs
the client's next `response.create` instead of refusing it). Responses started by server VAD
are opened the same way, when the reply starts. A barge-in (the pipeline's judgement: real
words, not a backchannel) or `response.cancel` ends the response `cancelled`.

Everything the client does is serialised under one lock, so a session reopened for new tools
or a pipeline rebuilt for new formats never races an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import structlog

from voxline.agents.spec import AgentSpec
from voxline.audio import AudioFrame
from voxline.conversation.engine import LLMMetrics
from voxline.conversation.session import SessionClosedError
from voxline.conversation.state import SessionState
from voxline.conversation.turns import BotTurn, Turn, UserTurn, new_id
from voxline.providers.llm.base import ToolCallRequest
from voxline.server.config import HostedAgent
from voxline.server.hub import ConversationHub
from voxline.server.realtime.agent import RealtimeAgent
from voxline.server.realtime.call import RealtimeCall, pipeline_key
from voxline.server.realtime.client_tools import ClientCalls
from voxline.server.realtime.config import SessionConfig
from voxline.server.realtime.edits import ItemEdits
from voxline.server.realtime.items import Item, ItemLog
from voxline.server.realtime.outbox import Outbox
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
        self.items = ItemLog()
        self.calls = ClientCalls()
        self.input = InputAudio(self)
        self.edits = ItemEdits(self)
        self.tasks = TaskGroup("realtime socket")
        self.call: RealtimeCall | None = None
        self.response: Response | None = None
        self.absorb_next_create = False  # a function output let the reply carry on
        self.client_waiting: set[str] = set()  # calls of the reply in flight the client owes
        self.agent_tools: set[str] = set()  # the agent's own tools running in that reply
        self.log = log.bind(agent=hosted.name, conversation_id=self.conversation_id)
        self._speech_source = speech
        self._speech: asyncio.Future[SpeechProviders] | None = None
        self._cancel_reason: str | None = None
        self._quiet_adds = False
        self._respond_task: asyncio.Task[None] | None = None
        self._pending_reopen = False
        self._pending_rebuild = False
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._offs: list[Any] = []
        self._closing = False

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
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self.calls.fail_all("the Realtime client disconnected")
        await self.tasks.close()
        await self._close_call()
        if self.outbox.dropped:
            self.log.warning("audio deltas dropped for a slow client", dropped=self.outbox.dropped)

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
            speech,
            self.config,
            self.calls,
            sink=self,
            on_gate=self.input.on_gate,
        )
        session = self.call.session
        self._offs = [
            session.on("reply_started", self._on_reply_started),
            session.on("bot_text_delta", self._on_delta),
            session.on("tool_started", self._on_tool_started),
            session.on("tool_finished", self._on_tool_finished),
            session.on("interrupted", self._on_interrupted),
            session.on("state_changed", self._on_state),
            session.on("turn_added", self._on_turn_added),
            session.on("metrics", self._on_metrics),
            session.on("error", self._on_error),
        ]
        self.log.info("realtime session opened", connection=session.connection_id)
        return self.call

    async def _close_call(self) -> None:
        call, self.call = self.call, None
        if call is None:
            return
        for off in self._offs:
            off()
        self._offs = []
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
        absorb, self.absorb_next_create = self.absorb_next_create, False
        replying = self.replying
        if self.response is not None:
            if absorb:
                return  # the reply carried on after the client's function output: it is this one
            raise ClientError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.response.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        response = self._open_response(params, awaiting_reply=not replying)
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
        response = self.response
        if response is None or (event.response_id and event.response_id != response.id):
            raise ClientError(
                "response_cancel_not_active",
                "There is no active response to cancel.",
                param="response_id",
            )
        self.cancel("client_cancelled")

    def cancel(self, reason: str) -> None:
        """End the active response now: audio cleared, the reply stopped and trimmed."""
        response = self.response
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
            call.transport.clear()
            call.pipeline.speaker.stop()
            self._cancel_reason = reason
            try:
                call.session.interrupt()
            finally:
                self._cancel_reason = None
        if response is not None:
            self._finish(response, "cancelled", reason)

    # -- what other modules need ----------------------------------------------------------------
    def emit(self, kind: str, /, **fields: Any) -> None:
        text = self.wire.event(kind, **fields)
        if text is not None:
            self.outbox.put(text, audio=kind == "response.output_audio.delta")

    def announce_added(self, item: Item, previous: str | None) -> None:
        """`conversation.item.added` + `.done` for an item that is complete as it is added."""
        shown = item.render(beta=self.wire.beta)
        self.emit("conversation.item.added", previous_item_id=previous, item=shown)
        self.emit("conversation.item.done", item=shown)

    def add_user_text(self, text: str) -> UserTurn:
        """A user turn this bridge made itself (not one whose VAD item awaits a transcript)."""
        call = self.call
        assert call is not None
        self._quiet_adds = True
        try:
            turn = call.session.turns.add_user_text(text, channel=call.session.channel)
        finally:
            self._quiet_adds = False
        self.absorb_next_create = False
        return turn

    @property
    def replying(self) -> bool:
        call = self.call
        return call is not None and call.session.state in _REPLYING

    # -- the session's events -------------------------------------------------------------------
    def _on_reply_started(self, **_: Any) -> None:
        self._current().awaiting_reply = False
        self.agent.response_instructions = None  # read already, for this reply only

    def _on_delta(self, turn: BotTurn, delta: str, **_: Any) -> None:
        self._current().text(turn.id, turn.content, delta)

    def _on_tool_started(self, call: ToolCallRequest, turn: Turn, **_: Any) -> None:
        live = self.call
        if live is not None and call.name in live.client_tools:
            self.calls.expect(call.id)
            self.client_waiting.add(call.id)
            self._current().function_call(call.id, call.name, call.arguments, turn.id)
        else:
            self.agent_tools.add(call.id)

    def _on_tool_finished(self, call: ToolCallRequest, turn: Turn, **_: Any) -> None:
        self.agent_tools.discard(call.id)
        if call.id in self.client_waiting:  # finished without the client (timeout, bad arguments)
            self.client_waiting.discard(call.id)
        self.calls.forget(call.id)
        items = self.items.for_call(call.id)
        if items:  # the client's output item if it sent one, else the call's own
            items[-1].turn_ids.append(turn.id)

    def _on_interrupted(self, **_: Any) -> None:
        response = self.response
        if response is not None:
            self._finish(response, "cancelled", self._cancel_reason or "turn_detected")

    def _on_state(self, new: SessionState, **_: Any) -> None:
        if new is S.LISTENING:  # the reply is over: nothing of it is owed any more
            self.client_waiting.clear()
            self.agent_tools.clear()

    def _on_turn_added(self, turn: Turn, **_: Any) -> None:
        if isinstance(turn, UserTurn) and not self._quiet_adds:
            self.input.transcribed(turn)

    def _on_metrics(self, kind: str, metrics: object, **_: Any) -> None:
        response = self.response
        if kind == "llm" and isinstance(metrics, LLMMetrics) and response is not None:
            response.input_tokens += metrics.prompt_tokens
            response.output_tokens += metrics.completion_tokens

    def _on_error(self, error: BaseException, where: str, **_: Any) -> None:
        response = self.response
        if where == "reply" and response is not None:
            response.error = f"the agent's model failed: {type(error).__name__}"

    # -- audio from the pipeline (`AudioSink`) --------------------------------------------------
    def on_audio(self, frame: AudioFrame, payload: bytes) -> None:
        if self._closing:
            return
        response = self._current()
        if not response.audio:
            return  # a text-only response: the words go out as text deltas only
        item = response.message_item()
        if item.audio_origin is None:
            item.audio_origin = frame.timestamp
            item.checkpoint(0.0, "")
        heard = self._delivered(item)  # as of the end of the frame before this one
        if heard != item.checkpoints[-1][1]:
            item.checkpoint((frame.timestamp - item.audio_origin) * 1000, heard)
        item.audio_ms = (frame.end - item.audio_origin) * 1000
        response.audio_delta(payload)

    def on_clear(self) -> None:
        """Barge-in (or a cancel): audio not sent yet is dropped; the words heard are noted
        when the response ends, once the pipeline has marked those of the piece it cut."""
        self.outbox.drop_audio()

    def _delivered(self, item: Item) -> str:
        """The text of the item's bot turns the session counts as delivered (played)."""
        call = self.call
        if call is None:
            return ""
        parts = []
        for turn_id in item.turn_ids:
            turn = call.session.turns.get(turn_id)
            if isinstance(turn, BotTurn):
                parts.append(call.session.delivery.heard(turn).strip())
        return " ".join(part for part in parts if part)

    # -- responses ------------------------------------------------------------------------------
    def _current(self) -> Response:
        """The active response; the server opens one when the agent speaks unasked (server
        VAD, an approval decided, a reply carrying on after a function output)."""
        return self.response or self._open_response(None, awaiting_reply=False)

    def _open_response(self, params: ResponseParams | None, *, awaiting_reply: bool) -> Response:
        modalities = (params.output_modalities or params.modalities) if params else None
        audio = "audio" in modalities if modalities else self.config.audio_out
        if self.wire.beta:
            shape = {
                "voice": self.config.voice,
                "output_audio_format": self.config.output_format.value,
            }
        else:
            shape = {"format": self.config.output_format.ga(), "voice": self.config.voice}
        response = Response(
            self.emit,
            self.items,
            conversation_id=self.conversation_id,
            audio=audio,
            beta=self.wire.beta,
            format_fields=shape,
            metadata=params.metadata if params else None,
            awaiting_reply=awaiting_reply,
        )
        self.response = response
        response.created()
        return response

    def _finish(self, response: Response, status: Any, reason: str | None = None) -> None:
        if self.response is response:
            self.response = None
        item = response.message
        if item is not None and item.audio_origin is not None:
            item.checkpoint(item.audio_ms, self._delivered(item))
        response.finish(status, reason)

    def _settle(self) -> None:
        """Finish the active response once it has nothing more to say."""
        response, call = self.response, self.call
        if response is None or call is None or response.awaiting_reply:
            return
        if call.pipeline.speaker.active:
            return
        waiting_on_client = bool(self.client_waiting) and not self.agent_tools
        if self.replying and not waiting_on_client:
            return
        self._finish(response, "failed" if response.error else "completed")

    def _quiet(self) -> bool:
        """Nothing is being said, heard, transcribed or waited for."""
        call = self.call
        return (
            self.response is None
            and not self.replying
            and not self.input.busy
            and not self.client_waiting
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
                self._settle()
                if self._pending_reopen or self._pending_rebuild:
                    async with self._lock:
                        await self._apply_pending()
            except Exception:
                self.log.exception("realtime bookkeeping failed")

    def _render_session(self) -> dict[str, Any]:
        return self.config.render(
            self.wire.dialect, session_id=self.session_id, model=self.agent.name
        )
