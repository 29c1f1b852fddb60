"""Client edits of the conversation: `conversation.item.create / truncate / delete / retrieve`.

Each edit lands on the turn records, so the model's next request, the stored history and the
debug feed all see what the client did: a user message is a user turn, a system message a
system turn, a `function_call_output` is the result of the call the agent's model made (it
resolves the wait in `client_tools.py`, and the reply carries on), an assistant message a
complete bot turn.

Truncation is how a Realtime client says what was actually heard: the assistant item's bot
turns are cut to the words played before `audio_end_ms` (mapped from milliseconds with the
checkpoints the bridge took from the playback tracker as the audio went out), and marked
interrupted, exactly as a barge-in on any other channel trims them. Items can only be added at
the end of the conversation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voxline.conversation.turns import BotTurn, ToolCallTurn, ToolResultTurn
from voxline.server.realtime.audio import decode
from voxline.server.realtime.items import Item
from voxline.server.realtime.protocol import (
    ClientError,
    ItemCreate,
    ItemDelete,
    ItemIn,
    ItemRetrieve,
    ItemTruncate,
)
from voxline.text.joining import heard_lengths

if TYPE_CHECKING:
    from voxline.server.realtime.bridge import RealtimeBridge
    from voxline.server.realtime.call import RealtimeCall

TRUNCATE_SLACK_MS = 100
"""`audio_end_ms` may pass the audio sent by this much (a client's rounding, a padded frame)."""
_TEXT_PARTS = frozenset({"input_text", "text", "output_text"})
_AUDIO_PARTS = frozenset({"input_audio", "audio", "output_audio"})


class ItemEdits:
    def __init__(self, bridge: RealtimeBridge) -> None:
        self.bridge = bridge

    # -- create -------------------------------------------------------------------------------
    async def create(self, event: ItemCreate) -> None:
        items = self.bridge.items
        given = event.item
        if event.previous_item_id is not None and event.previous_item_id != items.last_id:
            raise ClientError(
                "invalid_value",
                "items can only be added at the end of the conversation here",
                param="previous_item_id",
            )
        if given.id is not None and given.id in items:
            raise ClientError("invalid_value", f"item {given.id!r} already exists", param="item.id")
        call = await self.bridge.ensure_call()
        pcm = None
        audio = next((part.audio for part in given.content if part.audio), None)
        if given.type == "message" and given.role == "user" and audio is not None:
            fmt = self.bridge.config.input_format
            pcm = decode(audio, fmt, param="item.content.audio")  # before anything is recorded
        if given.type == "message":
            item = self._message(call, given)
        elif given.type == "function_call":
            item = self._function_call(call, given)
        else:
            item = self._function_output(call, given)
        if given.id is not None:
            item.id = given.id
        self.bridge.announce_added(item, items.add(item))
        if pcm is not None:  # transcribed into a user turn once announced
            rate = self.bridge.config.input_format.rate
            item.audio_seconds = len(pcm) / rate
            self.bridge.input.transcribe(item, pcm, rate)

    def _message(self, call: RealtimeCall, given: ItemIn) -> Item:
        role = given.role
        if role is None:
            raise ClientError(
                "missing_required_parameter", "a message needs a role", param="item.role"
            )
        kinds = {part.type for part in given.content}
        texts = [part.text or part.transcript or "" for part in given.content]
        text = " ".join(t.strip() for t in texts if t.strip())
        if not given.content or not kinds <= _TEXT_PARTS | _AUDIO_PARTS:
            raise ClientError(
                "invalid_value",
                "message content must be text or audio parts (images and references are not "
                "supported)",
                param="item.content",
            )
        if role == "user" and kinds & _AUDIO_PARTS:
            item = Item("message", "user", content_type="input_audio")
            if not any(part.audio for part in given.content):  # a transcript given instead
                if not text:
                    raise ClientError(
                        "missing_required_parameter",
                        "an audio part needs audio (or a transcript)",
                        param="item.content",
                    )
                item.text = text
                item.turn_ids.append(self.bridge.add_user_text(text).id)
            return item
        if not text:
            raise ClientError(
                "missing_required_parameter", "the message has no text", param="item.content"
            )
        if role == "user":
            item = Item("message", "user", content_type="input_text", text=text)
            item.turn_ids.append(self.bridge.add_user_text(text).id)
        elif role == "system":
            item = Item("message", "system", content_type="input_text", text=text)
            item.turn_ids.append(call.session.turns.add_system(text).id)
        else:
            kind = "output_audio" if kinds & _AUDIO_PARTS else "output_text"
            item = Item("message", "assistant", content_type=kind, text=text)
            turn = BotTurn(content=text, complete=True)
            call.session.turns.add(turn)
            item.turn_ids.append(turn.id)
            item.generated[turn.id] = text
        return item

    def _function_call(self, call: RealtimeCall, given: ItemIn) -> Item:
        if not given.call_id or not given.name:
            raise ClientError(
                "missing_required_parameter",
                "a function_call needs call_id and name",
                param="item.call_id" if not given.call_id else "item.name",
            )
        arguments = given.arguments or "{}"
        turn = call.session.turns.add_tool_call(given.call_id, given.name, arguments)
        item = Item("function_call", call_id=given.call_id, name=given.name, arguments=arguments)
        item.turn_ids.append(turn.id)
        return item

    def _function_output(self, call: RealtimeCall, given: ItemIn) -> Item:
        call_id = given.call_id
        if not call_id or given.output is None:
            raise ClientError(
                "missing_required_parameter",
                "a function_call_output needs call_id and output",
                param="item.call_id" if not call_id else "item.output",
            )
        item = Item("function_call_output", call_id=call_id, output=given.output)
        if self.bridge.calls.resolve(call_id, given.output):
            # The agent's reply was waiting for this: it carries on, and the result turn the
            # engine records is attached to this item when that tool finishes.
            self.bridge.replies.client_waiting.discard(call_id)
            self.bridge.replies.absorb_next_create = True
            self.bridge.replies.calls_answered()
            return item
        name = _unanswered(call, call_id)
        if name is None:
            raise ClientError(
                "invalid_value",
                f"no function call {call_id!r} is waiting for an output (unknown, already "
                "answered, or timed out)",
                param="item.call_id",
            )
        item.turn_ids.append(call.session.turns.add_tool_result(call_id, name, given.output).id)
        return item

    # -- truncate, delete, retrieve -----------------------------------------------------------
    def truncate(self, event: ItemTruncate) -> None:
        item = self.bridge.items.get(event.item_id)
        call = self.bridge.call
        if item is None or item.role != "assistant" or call is None:
            raise ClientError(
                "invalid_value", f"no assistant message item {event.item_id!r}", param="item_id"
            )
        if event.content_index != 0:
            raise ClientError(
                "invalid_value", "items here have one content part", param="content_index"
            )
        response = self.bridge.replies.response
        if response is not None and item in response.output:
            self.bridge.cancel("client_cancelled")
        if event.audio_end_ms > item.audio_ms + TRUNCATE_SLACK_MS:
            raise ClientError(
                "invalid_value",
                f"audio_end_ms ({event.audio_end_ms}) is longer than the item's audio "
                f"({item.audio_ms:.0f} ms)",
                param="audio_end_ms",
            )
        if item.audio_origin is not None:  # the marks are final now the response has ended
            item.checkpoint(item.audio_ms, self.bridge.replies.delivered(item))
        heard = item.heard_at(event.audio_end_ms)
        if heard is not None:
            _trim(call, item, heard)
        self.bridge.emit(
            "conversation.item.truncated",
            item_id=item.id,
            content_index=event.content_index,
            audio_end_ms=event.audio_end_ms,
        )

    def delete(self, event: ItemDelete) -> None:
        item = self.bridge.items.get(event.item_id)
        call = self.bridge.call
        if item is None or call is None:
            raise ClientError("invalid_value", f"no item {event.item_id!r}", param="item_id")
        response = self.bridge.replies.response
        if response is not None and item in response.output:
            raise ClientError(
                "invalid_value",
                "an item of the response in progress cannot be deleted; cancel it first",
                param="item_id",
            )
        doomed = set(item.turn_ids)
        if item.type == "function_call":  # a result without its call would break the history
            doomed |= {
                t.id
                for t in call.session.turns.all()
                if isinstance(t, ToolResultTurn) and t.call_id == item.call_id
            }
        for turn_id in doomed:
            if turn_id in call.session.turns:
                call.session.turns.delete(turn_id)
        self.bridge.items.remove(item.id)
        self.bridge.emit("conversation.item.deleted", item_id=item.id)

    def retrieve(self, event: ItemRetrieve) -> None:
        item = self.bridge.items.get(event.item_id)
        if item is None:
            raise ClientError("invalid_value", f"no item {event.item_id!r}", param="item_id")
        self.bridge.emit(
            "conversation.item.retrieved", item=item.render(beta=self.bridge.wire.beta)
        )


def _unanswered(call: RealtimeCall, call_id: str) -> str | None:
    """The name of the recorded call `call_id` when it has no result yet."""
    name = None
    for turn in call.session.turns.all():
        if isinstance(turn, ToolCallTurn) and turn.call_id == call_id:
            name = turn.name
        elif isinstance(turn, ToolResultTurn) and turn.call_id == call_id:
            return None
    return name


def _trim(call: RealtimeCall, item: Item, heard: str) -> None:
    """Cut the item's bot turns to `heard` (never lengthen a turn a barge-in already cut)."""
    turn_ids = [turn_id for turn_id in item.turn_ids if turn_id in item.generated]
    lengths = heard_lengths(heard, [item.generated[turn_id] for turn_id in turn_ids])
    turns = call.session.turns
    for turn_id, length in zip(turn_ids, lengths, strict=True):
        turn = turns.get(turn_id)
        if not isinstance(turn, BotTurn):
            continue
        kept = item.generated[turn_id][:length].rstrip()
        if len(kept) >= len(turn.content):
            continue
        if kept.strip():
            turn.content = kept
            turn.interrupted = True
        else:
            turns.delete(turn_id)
    item.text = heard
