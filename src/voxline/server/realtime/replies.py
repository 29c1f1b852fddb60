"""The agent's replies as Realtime responses, with the events that say so.

A voxline reply runs the model/tool loop to its end; a Realtime response ends at a client
function call. `Replies` follows the live session's own events (a reply starting, text deltas,
tool calls, an interruption, the model's token counts) and the pipeline's audio, and keeps the
client's response in step: opened when the client asks or when the agent speaks unasked (server
VAD, an approval decided, a reply carrying on after a function output), finished once its audio
has all gone out and either the reply is over or it waits only on calls the client must
answer, and ended `cancelled` by a barge-in or a cancel. The client's `function_call_output`
lets the same reply carry on, into the response the client then asks for (or, if the reply
speaks first, into one opened here, which absorbs the client's next `response.create`).

It is also the pipeline's `AudioSink`: each frame becomes an audio delta (waiting for room in
the outbox) and moves the item's record of which words were heard when (`items.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voxline.audio import AudioFrame
from voxline.conversation.engine import LLMMetrics
from voxline.conversation.session import Session
from voxline.conversation.state import SessionState
from voxline.conversation.turns import BotTurn, Turn, UserTurn
from voxline.providers.llm.base import ToolCallRequest
from voxline.server.realtime.items import Item
from voxline.server.realtime.protocol import ResponseParams
from voxline.server.realtime.responses import Response, Status

if TYPE_CHECKING:
    from collections.abc import Callable

    from voxline.server.realtime.bridge import RealtimeBridge

S = SessionState


class Replies:
    def __init__(self, bridge: RealtimeBridge) -> None:
        self.bridge = bridge
        self.response: Response | None = None
        self.absorb_next_create = False  # a function output let the reply carry on
        self.client_waiting: set[str] = set()  # calls of the reply in flight the client owes
        self.agent_tools: set[str] = set()  # the agent's own tools running in that reply
        self.cancel_reason: str | None = None  # set while the bridge cancels a response

    def subscribe(self, session: Session) -> list[Callable[[], None]]:
        return [
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

    # -- the session's events -----------------------------------------------------------------
    def _on_reply_started(self, **_: Any) -> None:
        self.current().awaiting_reply = False
        self.bridge.agent.response_instructions = None  # read already, for this reply only

    def _on_delta(self, turn: BotTurn, delta: str, **_: Any) -> None:
        self.current().text(turn.id, turn.content, delta)

    def _on_tool_started(self, call: ToolCallRequest, turn: Turn, **_: Any) -> None:
        live = self.bridge.call
        if live is not None and call.name in live.client_tools:
            self.bridge.calls.expect(call.id)
            self.client_waiting.add(call.id)
            self.current().function_call(call.id, call.name, call.arguments, turn.id)
        else:
            self.agent_tools.add(call.id)

    def _on_tool_finished(self, call: ToolCallRequest, turn: Turn, **_: Any) -> None:
        self.agent_tools.discard(call.id)
        if call.id in self.client_waiting:  # finished without the client (timeout, bad arguments)
            self.client_waiting.discard(call.id)
        self.bridge.calls.forget(call.id)
        items = self.bridge.items.for_call(call.id)
        if items:  # the client's output item if it sent one, else the call's own
            items[-1].turn_ids.append(turn.id)

    def _on_interrupted(self, **_: Any) -> None:
        response = self.response
        if response is not None:
            self.finish(response, "cancelled", self.cancel_reason or "turn_detected")

    def _on_state(self, new: SessionState, **_: Any) -> None:
        if new is S.LISTENING:  # the reply is over: nothing of it is owed any more
            self.client_waiting.clear()
            self.agent_tools.clear()

    def _on_turn_added(self, turn: Turn, **_: Any) -> None:
        if isinstance(turn, UserTurn) and not self.bridge.quiet_adds:
            self.bridge.input.transcribed(turn)

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
    async def on_audio(self, frame: AudioFrame, payload: bytes) -> None:
        if self.bridge.closing:
            return
        response = self.current()
        if not response.audio:
            return  # a text-only response: the words go out as text deltas only
        item = response.message_item()
        if item.audio_origin is None:
            item.audio_origin = frame.timestamp
            item.checkpoint(0.0, "")
        heard = self.delivered(item)  # as of the end of the frame before this one
        if heard != item.checkpoints[-1][1]:
            item.checkpoint((frame.timestamp - item.audio_origin) * 1000, heard)
        item.audio_ms = (frame.end - item.audio_origin) * 1000
        for fields in response.audio_deltas(payload):
            event = self.bridge.wire.event("response.output_audio.delta", **fields)
            if event is None or not await self.bridge.outbox.audio(event):
                return  # taken back by a barge-in, or the client is gone

    def on_clear(self) -> None:
        """Barge-in (or a cancel): audio not sent yet is dropped; the words heard are noted
        when the response ends, once the pipeline has marked those of the piece it cut."""
        self.bridge.outbox.drop_audio()

    def delivered(self, item: Item) -> str:
        """The text of the item's bot turns the session counts as delivered (played)."""
        call = self.bridge.call
        if call is None:
            return ""
        parts = []
        for turn_id in item.turn_ids:
            turn = call.session.turns.get(turn_id)
            if isinstance(turn, BotTurn):
                parts.append(call.session.delivery.heard(turn).strip())
        return " ".join(part for part in parts if part)

    # -- responses ------------------------------------------------------------------------------
    def current(self) -> Response:
        """The active response, opened here when the agent speaks unasked."""
        return self.response or self.open(None, awaiting_reply=False)

    def open(self, params: ResponseParams | None, *, awaiting_reply: bool) -> Response:
        """A new active response (`response.created` sent); `awaiting_reply` while the reply
        the client asked for has not started, so it is not mistaken for one with nothing to say."""
        modalities = (params.output_modalities or params.modalities) if params else None
        audio = "audio" in modalities if modalities else self.bridge.config.audio_out
        if self.bridge.wire.beta:
            shape = {
                "voice": self.bridge.config.voice,
                "output_audio_format": self.bridge.config.output_format.value,
            }
        else:
            shape = {
                "format": self.bridge.config.output_format.ga(),
                "voice": self.bridge.config.voice,
            }
        response = Response(
            self.bridge.emit,
            self.bridge.items,
            conversation_id=self.bridge.conversation_id,
            audio=audio,
            beta=self.bridge.wire.beta,
            format_fields=shape,
            metadata=params.metadata if params else None,
            awaiting_reply=awaiting_reply,
        )
        self.response = response
        response.created()
        return response

    def finish(self, response: Response, status: Status, reason: str | None = None) -> None:
        if self.response is response:
            self.response = None
        item = response.message
        if item is not None and item.audio_origin is not None:
            item.checkpoint(item.audio_ms, self.delivered(item))
        response.finish(status, reason)

    def calls_answered(self) -> None:
        """The client answered the calls of the reply in flight, which carries on now. A
        response that only carried those calls is over: finish it before the reply speaks
        again, as OpenAI's model always answers a function's output in a response of its own.
        Otherwise the answer would join the calls' response, and a client that asks for the
        answer after that `response.done` (voxline's own Realtime engine does) would start yet
        another one."""
        response = self.response
        if (
            response is not None
            and response.message is None
            and not self.client_waiting
            and any(item.type == "function_call" for item in response.output)
        ):
            self.finish(response, "completed")

    def settle(self) -> None:
        """Finish the active response once it has nothing more to say."""
        response, call = self.response, self.bridge.call
        if response is None or call is None or response.awaiting_reply:
            return
        if call.pipeline.speaker.active:
            return
        waiting_on_client = bool(self.client_waiting) and not self.agent_tools
        if self.bridge.replying and not waiting_on_client:
            return
        self.finish(response, "failed" if response.error else "completed")
