"""Turns -> the message list a chat model reads.

The in-memory turns are the truth; this view is rebuilt for every request so that truncation,
summaries and approvals need no bookkeeping of their own. It also keeps the list valid for strict
providers: a text reply and the tool calls of the same step become one assistant message, and a
tool call without its result (or the reverse) is left out rather than sent broken.

A result also always follows its call directly, even when it was recorded later: a tool that
kept running through an interruption records its result after the user's next words, and
strict providers reject a tool message that does not follow the assistant message calling it.
"""

from __future__ import annotations

from collections.abc import Iterable

from voxline.conversation.turns import (
    BotTurn,
    DtmfTurn,
    HandoffTurn,
    SystemTurn,
    ToolCallTurn,
    ToolResultTurn,
    Turn,
    UserTurn,
)
from voxline.providers.llm.base import ChatMessage, ToolCallRequest


def build_messages(instructions: str, turns: Iterable[Turn]) -> list[ChatMessage]:
    ordered = list(turns)
    results = {t.call_id: t for t in ordered if isinstance(t, ToolResultTurn)}
    called = {t.call_id for t in ordered if isinstance(t, ToolCallTurn) and t.call_id in results}
    messages = [ChatMessage(role="system", content=instructions)]
    owed: list[str] = []  # calls sent whose results are not sent yet, in call order
    for turn in ordered:
        if owed and not isinstance(turn, ToolCallTurn | ToolResultTurn):
            # The results of the calls above come before anything else is said.
            messages.extend(_tool_message(results[call_id]) for call_id in owed)
            owed.clear()
        last = messages[-1]
        if isinstance(turn, UserTurn):
            if turn.final and turn.content.strip():
                messages.append(ChatMessage(role="user", content=turn.content))
        elif isinstance(turn, BotTurn):
            if turn.content:
                messages.append(ChatMessage(role="assistant", content=turn.content))
        elif isinstance(turn, ToolCallTurn):
            if turn.call_id not in called:
                continue
            request = ToolCallRequest(id=turn.call_id, name=turn.name, arguments=turn.arguments)
            if last.role == "assistant":
                last.tool_calls.append(request)
            else:
                messages.append(ChatMessage(role="assistant", tool_calls=[request]))
            owed.append(turn.call_id)
        elif isinstance(turn, ToolResultTurn):
            if turn.call_id in owed:
                messages.append(_tool_message(turn))
                owed.remove(turn.call_id)
        elif isinstance(turn, SystemTurn):
            label = "Summary of the conversation so far" if turn.summary else "Note"
            messages.append(ChatMessage(role="system", content=f"{label}:\n{turn.content}"))
        elif isinstance(turn, DtmfTurn):
            messages.append(ChatMessage(role="user", content=f"[keypad: {turn.digits}]"))
        elif isinstance(turn, HandoffTurn):
            messages.append(
                ChatMessage(role="system", content=f"The call was handed off to {turn.target}.")
            )
    messages.extend(_tool_message(results[call_id]) for call_id in owed)
    return messages


def _tool_message(turn: ToolResultTurn) -> ChatMessage:
    return ChatMessage(role="tool", content=turn.content, tool_call_id=turn.call_id, name=turn.name)
