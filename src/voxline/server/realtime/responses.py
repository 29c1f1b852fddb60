"""One Realtime response and the exact event sequence it owes the client.

OpenAI's clients are state machines over these events: `response.created`, then per output item
`response.output_item.added` + `conversation.item.added`, for a message `response.content_part.
added`, the deltas, then each `.done` in reverse nesting order, and `response.done` last with
every item in its final state. `Response` emits them in that order whatever order the voice
pipeline produces text, audio and tool calls in, and closes whatever is open exactly once,
however the response ends (completed, cancelled by barge-in or by the client, failed).

It knows nothing of sessions or sockets: the bridge tells it what happened, `emit` sends.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Literal

from voxline.conversation.turns import new_id
from voxline.server.realtime.items import Item, ItemLog

Emit = Callable[..., None]
Status = Literal["completed", "cancelled", "failed", "incomplete"]
AUDIO_CHUNK_BYTES = 192 * 1024
"""Raw audio per delta at most (256 KiB once base64-encoded): far below the 1 MiB event limit."""


class Response:
    """A response in progress. `emit(kind, **fields)` sends one event (GA names)."""

    def __init__(
        self,
        emit: Emit,
        items: ItemLog,
        *,
        conversation_id: str,
        audio: bool,
        beta: bool,
        format_fields: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        awaiting_reply: bool = False,
    ) -> None:
        self.id = new_id("resp")
        self._emit = emit
        self._items = items
        self.conversation_id = conversation_id
        self.audio = audio
        self.beta = beta
        self._format = format_fields
        self.metadata = metadata
        self.awaiting_reply = awaiting_reply  # asked for, and the reply has not started yet
        self.output: list[Item] = []
        self.message: Item | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.error: str | None = None
        self.done = False

    # -- what happened ------------------------------------------------------------------------
    def created(self) -> None:
        self._emit("response.created", response=self._render("in_progress", None))

    def text(self, turn_id: str, content: str, delta: str) -> Item:
        """A delta of bot text (`content`: the turn's whole text so far)."""
        item = self.message_item()
        if turn_id not in item.turn_ids:
            item.turn_ids.append(turn_id)
        item.generated[turn_id] = content
        item.text = (item.text or "") + delta
        kind = (
            "response.output_audio_transcript.delta" if self.audio else "response.output_text.delta"
        )
        self._emit(kind, **self._where(item), delta=delta)
        return item

    def audio_deltas(self, payload: bytes) -> list[dict[str, Any]]:
        """The fields of the `response.output_audio.delta` events carrying `payload` (sent by
        the caller, which waits for room in the outbox)."""
        item = self.message_item()
        return [
            {
                **self._where(item),
                "delta": base64.b64encode(payload[start : start + AUDIO_CHUNK_BYTES]).decode(),
            }
            for start in range(0, len(payload), AUDIO_CHUNK_BYTES)
        ]

    def function_call(self, call_id: str, name: str, arguments: str, turn_id: str) -> Item:
        item = Item("function_call", call_id=call_id, name=name, status="in_progress")
        item.turn_ids.append(turn_id)
        self._add(item)
        base = {"response_id": self.id, "item_id": item.id, "output_index": self._index(item)}
        self._emit(
            "response.function_call_arguments.delta", **base, call_id=call_id, delta=arguments
        )
        item.arguments = arguments
        item.status = "completed"
        self._emit(
            "response.function_call_arguments.done",
            **base,
            call_id=call_id,
            name=name,
            arguments=arguments,
        )
        self._close(item)
        return item

    def message_item(self) -> Item:
        """The assistant message of this response, opened on first use."""
        if self.message is not None:
            return self.message
        kind = "output_audio" if self.audio else "output_text"
        item = Item("message", "assistant", status="in_progress", content_type=kind, text="")
        self.message = item
        self._add(item)
        self._emit(
            "response.content_part.added",
            **self._where(item),
            part=item.part(beta=self.beta),
        )
        return item

    # -- the end ------------------------------------------------------------------------------
    def finish(self, status: Status, reason: str | None = None) -> None:
        """Close what is open and send `response.done`; later calls do nothing."""
        if self.done:
            return
        self.done = True
        item = self.message
        if item is not None and item.status == "in_progress":
            transcript = item.text or ""
            if self.audio:
                self._emit("response.output_audio.done", **self._where(item))
                self._emit(
                    "response.output_audio_transcript.done",
                    **self._where(item),
                    transcript=transcript,
                )
            else:
                self._emit("response.output_text.done", **self._where(item), text=transcript)
            self._emit(
                "response.content_part.done", **self._where(item), part=item.part(beta=self.beta)
            )
            item.status = "completed" if status == "completed" else "incomplete"
            self._close(item)
        details: dict[str, Any] | None = None
        if status in ("cancelled", "incomplete"):
            details = {"type": status, "reason": reason}
        elif status == "failed":
            error = {"type": "server_error", "code": "reply_failed", "message": self.error}
            details = {"type": "failed", "error": error}
        self._emit("response.done", response=self._render(status, details))

    # -- helpers ------------------------------------------------------------------------------
    def _add(self, item: Item) -> None:
        previous = self._items.add(item)
        self.output.append(item)
        shown = item.render(beta=self.beta)
        if item.type == "message":
            shown["content"] = []
        self._emit(
            "response.output_item.added",
            response_id=self.id,
            output_index=self._index(item),
            item=shown,
        )
        self._emit("conversation.item.added", previous_item_id=previous, item=shown)

    def _close(self, item: Item) -> None:
        shown = item.render(beta=self.beta)
        self._emit(
            "response.output_item.done",
            response_id=self.id,
            output_index=self._index(item),
            item=shown,
        )
        self._emit("conversation.item.done", item=shown)

    def _index(self, item: Item) -> int:
        return self.output.index(item)

    def _where(self, item: Item) -> dict[str, Any]:
        return {
            "response_id": self.id,
            "item_id": item.id,
            "output_index": self._index(item),
            "content_index": 0,
        }

    def _render(self, status: str, details: dict[str, Any] | None) -> dict[str, Any]:
        modalities = ["audio"] if self.audio else ["text"]
        usage = {
            "total_tokens": self.input_tokens + self.output_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "input_token_details": {"text_tokens": self.input_tokens, "audio_tokens": 0},
            "output_token_details": {"text_tokens": self.output_tokens, "audio_tokens": 0},
        }
        shown: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": [item.render(beta=self.beta) for item in self.output],
            "conversation_id": self.conversation_id,
            "metadata": self.metadata,
            "usage": usage if status != "in_progress" else None,
        }
        if self.beta:
            shown["modalities"] = ["text", "audio"] if self.audio else ["text"]
            return shown | self._format
        shown["output_modalities"] = modalities
        shown["max_output_tokens"] = "inf"
        shown["audio"] = {"output": self._format}
        return shown
