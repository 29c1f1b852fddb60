"""Conversation items: the Realtime client's view of the conversation, mapped onto turns.

A Realtime client addresses the conversation by item ids (to truncate, delete or retrieve), and
voxline keeps it as turn records. An `Item` is the bridge: its wire shape plus the ids of the
turns it stands for. The mapping is not one to one: an assistant message is every bot turn of
one response (text spoken before and after an agent tool), and a user audio item exists from
the moment VAD hears speech, before any turn does.

An assistant item also remembers how its audio lines up with its words, so a later
`conversation.item.truncate` at `audio_end_ms` can cut its turns to the words actually heard.
`checkpoints` are (milliseconds of the item's audio, text heard by then) taken each time the
session's `Delivery` moves on: the speaker marks a TTS piece (a sentence, usually) delivered
when its last frame has gone out, so the checkpoints are exact at piece ends, and a point inside
a piece gets its leading words in proportion to their length, as the playback tracker weighs
them. The last checkpoint is taken when the response ends, after a barge-in has marked the
words of the piece it cut.
"""

from __future__ import annotations

import bisect
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from voxline.conversation.turns import new_id

ItemType = Literal["message", "function_call", "function_call_output"]
MAX_TEXT_CHARS = 200_000
"""Text echoed inside one event (a transcript, a tool output) is cut here, so an event carrying
an item stays under the 1 MiB limit whatever the client or the model wrote."""


@dataclass(eq=False)
class Item:
    type: ItemType
    role: Literal["user", "assistant", "system"] | None = None
    id: str = field(default_factory=lambda: new_id("item"))
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    content_type: str = "input_text"  # input_text | input_audio | output_audio | output_text
    text: str | None = None  # the text, or the audio's transcript (None: not known yet)
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    output: str = ""
    turn_ids: list[str] = field(default_factory=list)
    # assistant audio: where it starts on the output timeline, how much was sent, and the words
    # heard at points along it
    audio_origin: float | None = None
    audio_ms: float = 0.0
    checkpoints: list[tuple[float, str]] = field(default_factory=list)
    generated: dict[str, str] = field(default_factory=dict)  # bot turn id -> text as generated
    audio_seconds: float = 0.0  # user audio: its length

    @classmethod
    def user_audio(cls, item_id: str | None = None) -> Item:
        return cls("message", "user", id=item_id or new_id("item"), content_type="input_audio")

    def render(self, *, beta: bool) -> dict[str, Any]:
        base: dict[str, Any] = {"id": self.id, "object": "realtime.item", "type": self.type}
        base["status"] = self.status
        if self.type == "function_call":
            return base | {"call_id": self.call_id, "name": self.name, "arguments": self.arguments}
        if self.type == "function_call_output":
            return base | {"call_id": self.call_id, "output": _cut(self.output)}
        return base | {"role": self.role, "content": [self.part(beta=beta, as_item=True)]}

    def part(self, *, beta: bool, as_item: bool = False) -> dict[str, Any]:
        """The one content part: as an item holds it, or as `response.content_part.*` shows
        it (there the types stay `audio` / `text` in both dialects)."""
        kind = self.content_type
        if not as_item or beta:
            kind = {"output_audio": "audio", "output_text": "text"}.get(kind, kind)
        text = _cut(self.text) if self.text is not None else None
        if kind in ("input_text", "text", "output_text"):
            return {"type": kind, "text": text or ""}
        return {"type": kind, "transcript": text}

    # -- assistant audio and what of it was heard ---------------------------------------------
    def checkpoint(self, ms: float, heard: str) -> None:
        if self.checkpoints and ms <= self.checkpoints[-1][0]:
            self.checkpoints[-1] = (self.checkpoints[-1][0], heard)
        else:
            self.checkpoints.append((ms, heard))

    def heard_at(self, audio_end_ms: float) -> str | None:
        """The words heard once `audio_end_ms` of this item's audio had played; None when that
        covers all the audio sent (nothing to cut)."""
        if audio_end_ms >= self.audio_ms:
            return None
        points = self.checkpoints
        index = bisect.bisect_right([ms for ms, _ in points], audio_end_ms) - 1
        if index < 0:
            return ""
        start, heard = points[index]
        if index + 1 == len(points):
            return heard
        end, later = points[index + 1]
        piece = later[len(heard) :] if later.startswith(heard) else ""
        fraction = (audio_end_ms - start) / (end - start) if end > start else 0.0
        return (heard + _leading_words(piece, fraction)).strip()


class ItemLog:
    """The items of one socket, in conversation order."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Item] = OrderedDict()

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    @property
    def last_id(self) -> str | None:
        return next(reversed(self._items), None)

    def add(self, item: Item) -> str | None:
        """Append; returns the id of the item before it (`previous_item_id`)."""
        previous = self.last_id
        self._items[item.id] = item
        return previous

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def remove(self, item_id: str) -> Item | None:
        return self._items.pop(item_id, None)

    def for_call(self, call_id: str) -> list[Item]:
        return [item for item in self._items.values() if item.call_id == call_id]


_WORD = re.compile(r"\S+")


def _leading_words(text: str, fraction: float) -> str:
    """The words of `text` that fit in `fraction` of it, each weighted by its length."""
    words = list(_WORD.finditer(text))
    budget = fraction * sum(len(word.group()) for word in words) + 1e-9
    end = 0
    for word in words:
        budget -= len(word.group())
        if budget < 0:
            break
        end = word.end()
    return text[:end]


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS]
