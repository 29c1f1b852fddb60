"""Turn records as Realtime conversation items, and a bot turn cut to what was heard.

A Realtime server keeps its own copy of the conversation, which dies with the socket. voxline's
turn store is the lasting one, so every new connection is seeded from it: user, assistant and
system text as message items, and tool calls with their results as `function_call` /
`function_call_output` pairs (a call without a result is left out, as in a chat request).

A barge-in cuts the model's audio at a playback position; the bot turn holds the transcript of
the whole item. What the caller heard is taken as the same share of the transcript as of the
audio, cut back to a word boundary: never a half word, and never more than was played. That
share holds while the transcript streams in step with the audio, as OpenAI's does; a server
whose transcript runs ahead of its audio (a cascaded one such as voxline's own endpoint writes
the reply's text as its model does, and speaks it in real time) is judged by the call's
speaking rate instead (`SpeakingRate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voxline.conversation.turns import (
    BotTurn,
    DtmfTurn,
    SystemTurn,
    ToolCallTurn,
    ToolResultTurn,
    Turn,
    UserTurn,
)
from voxline.providers.realtime import events as wire

SEED_LIMIT = 60  # turns re-sent on a new connection; older ones live on in summaries
DTMF_NOTE = "(The caller pressed {digits} on the keypad.)"


def seed_items(turns: Sequence[Turn], limit: int = SEED_LIMIT) -> list[dict[str, Any]]:
    """`conversation.item.create` events that rebuild `turns` (the last `limit`) on a server."""
    recent = list(turns)[-limit:]
    answered = {t.call_id for t in recent if isinstance(t, ToolResultTurn)}
    called: set[str] = set()
    items: list[dict[str, Any]] = []
    for turn in recent:
        if isinstance(turn, UserTurn) and turn.content.strip():
            items.append(wire.message_item("user", turn.content))
        elif isinstance(turn, BotTurn) and turn.content.strip():
            items.append(wire.message_item("assistant", turn.content))
        elif isinstance(turn, SystemTurn) and turn.content.strip():
            items.append(wire.message_item("system", turn.content))
        elif isinstance(turn, DtmfTurn) and turn.digits:
            items.append(wire.message_item("user", DTMF_NOTE.format(digits=turn.digits)))
        elif isinstance(turn, ToolCallTurn) and turn.call_id in answered:
            called.add(turn.call_id)
            items.append(wire.function_call_item(turn.call_id, turn.name, turn.arguments))
        elif isinstance(turn, ToolResultTurn) and turn.call_id in called:
            items.append(wire.function_call_output(turn.call_id, turn.content))
    return items


def approved_pair(
    turns: Sequence[Turn], approval_id: str
) -> tuple[ToolCallTurn, ToolResultTurn] | None:
    """The call/result pair a session recorded when it applied a human's decision."""
    call = next(
        (
            t
            for t in reversed(turns)
            if isinstance(t, ToolCallTurn) and t.approval_id == approval_id
        ),
        None,
    )
    if call is None:
        return None
    result = next(
        (t for t in turns if isinstance(t, ToolResultTurn) and t.call_id == call.call_id), None
    )
    return (call, result) if result is not None else None


def heard_text(content: str, played_ms: int, total_ms: int) -> str:
    """The part of `content` heard when `played_ms` of its `total_ms` of audio played."""
    if total_ms <= 0 or played_ms <= 0:
        return ""
    if played_ms >= total_ms:
        return content
    keep = int(len(content) * played_ms / total_ms)
    heard = content[:keep]
    if keep < len(content) and not content[keep].isspace():
        heard = heard.rpartition(" ")[0]  # the word being spoken was not heard whole
    return heard.rstrip()


class SpeakingRate:
    """Characters of transcript per millisecond of audio over the answers of a call played
    whole, to judge how long the audio of a transcript that ran ahead of it will be."""

    def __init__(self) -> None:
        self.chars = 0
        self.ms = 0

    def add(self, text: str, ms: int) -> None:
        """An answer whose transcript and audio are both complete."""
        if text.strip() and ms > 0:
            self.chars += len(text)
            self.ms += ms

    def total_ms(self, text: str, received_ms: int) -> int:
        """The audio length to share `text` over: what arrived, or, when the transcript is
        further ahead than this call's rate allows, what it takes to say at that rate."""
        if self.chars <= 0:
            return received_ms
        return max(received_ms, round(len(text) * self.ms / self.chars))

    def heard(self, text: str, played_ms: int, received_ms: int) -> str:
        """`heard_text` of an answer cut after `played_ms` of the `received_ms` that came."""
        return heard_text(text, played_ms, self.total_ms(text, received_ms))
