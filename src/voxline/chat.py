"""The terminal channel: one Session, stdin in, streamed stdout out.

It is a channel like any other: it only sends text, interrupts, and renders session events, so
what works here works the same on the phone.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

from voxline.agents.runtime import AgentRuntime
from voxline.conversation.session import Session
from voxline.conversation.turns import BotTurn, ToolCallTurn
from voxline.providers.llm.base import ToolCallRequest
from voxline.settings import Settings
from voxline.store.base import ApprovalRecord
from voxline.tools.approvals import ApprovalNotFoundError, ApprovalStateError
from voxline.tools.base import ToolOutcome

HELP = """commands:
  /approve ID            approve a pending tool call
  /reject ID [reason]    reject it
  /pending               list pending approvals
  /history               show the conversation so far
  /quit                  leave (the conversation is kept; resume with --session ID)"""


class TerminalView:
    """Renders session events as a transcript; knows nothing of how the reply is made."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._open_turn: str | None = None

    def attach(self, session: Session) -> None:
        session.on("bot_text_delta", self.on_delta)
        session.on("reply_finished", self.on_reply_finished)
        session.on("tool_started", self.on_tool_started)
        session.on("tool_finished", self.on_tool_finished)
        session.on("approval_requested", self.on_approval)
        session.on("interrupted", self.on_interrupted)
        session.on("error", self.on_error)

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def end_line(self) -> None:
        if self._open_turn is not None:
            self.write("\n")
            self._open_turn = None

    def on_delta(self, turn: BotTurn, delta: str) -> None:
        if self._open_turn != turn.id:
            self.end_line()
            self.write("agent> ")
            self._open_turn = turn.id
            delta = delta.lstrip()  # the joint to the previous step belongs to one line only
        self.write(delta)

    def on_reply_finished(self, turn: BotTurn | None) -> None:
        self.end_line()

    def on_tool_started(self, call: ToolCallRequest, turn: ToolCallTurn) -> None:
        self.end_line()
        self.write(f"  [tool] {call.name}({call.arguments})\n")

    def on_tool_finished(self, call: ToolCallRequest, outcome: ToolOutcome, turn: Any) -> None:
        mark = "failed" if outcome.is_error else "->"
        self.write(f"  [tool] {call.name} {mark} {outcome.content[:200]}\n")

    def on_approval(self, approval_id: str, call: ToolCallRequest, turn: ToolCallTurn) -> None:
        self.write(
            f"  [approval needed] {call.name}({call.arguments}) id={approval_id}\n"
            f"  type /approve {approval_id} or /reject {approval_id} REASON\n"
        )

    def on_interrupted(self, turn: BotTurn | None) -> None:
        self.end_line()
        self.write("  [interrupted]\n")

    def on_error(self, error: BaseException, where: str) -> None:
        self.end_line()
        self.write(f"  [error] {error}\n")


async def run_chat(
    agent: AgentRuntime,
    settings: Settings,
    conversation_id: str | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> None:
    """Interactive loop until /quit or end of input."""
    inp, out = stdin or sys.stdin, stdout or sys.stdout
    session = Session(agent, conversation_id=conversation_id, settings=settings, channel="terminal")
    view = TerminalView(out)
    view.attach(session)
    await session.start()
    view.end_line()
    view.write(f"(conversation {session.id}; /help for commands)\n")
    try:
        while True:
            view.write("you> ")
            line = await asyncio.to_thread(inp.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if not await _command(session, view, text):
                    break
                continue
            await session.send_text(text)
            await session.wait_idle()
    finally:
        await session.close()
        view.write(f"\n(conversation {session.id} saved)\n")


async def _command(session: Session, view: TerminalView, text: str) -> bool:
    """Handle one slash command; returns False to leave."""
    name, _, rest = text.partition(" ")
    if name in ("/quit", "/exit"):
        return False
    if name == "/help":
        view.write(HELP + "\n")
    elif name == "/history":
        for turn in session.turns:
            view.write(f"  {turn.kind.value:12} {_describe(turn.to_record()['data'])}\n")
    elif name == "/pending":
        pending: list[ApprovalRecord] = await session.approvals.list_pending()
        for rec in pending:
            view.write(f"  {rec.id} {rec.tool}({rec.arguments})\n")
        if not pending:
            view.write("  no pending approvals\n")
    elif name in ("/approve", "/reject"):
        approval_id, _, reason = rest.strip().partition(" ")
        try:
            if name == "/approve":
                await session.approvals.approve(approval_id)
            else:
                await session.approvals.reject(approval_id, reason or None)
        except (ApprovalNotFoundError, ApprovalStateError) as exc:
            view.write(f"  {exc}\n")
        await session.wait_idle()
    else:
        view.write(f"  unknown command {name}; /help lists them\n")
    return True


def _describe(data: dict[str, Any]) -> str:
    for key in ("content", "arguments", "digits", "target"):
        if data.get(key):
            prefix = f"{data['name']} " if data.get("name") else ""
            return prefix + str(data[key])[:120]
    return ""
