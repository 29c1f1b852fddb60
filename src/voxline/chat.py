"""The terminal channel: one Session, stdin in, streamed stdout out.

It is a channel like any other: it only sends text, interrupts, and renders session events, so
what works here works the same on the phone.
"""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType
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


class LiveTimer:
    """`thinking… 2.4 s`, redrawn in place while the model works and erased when the answer
    starts: a local model on a small CPU can take many seconds before its first word, and a
    silent terminal looks hung. Only on a terminal; a pipe or a file gets the transcript alone.
    Also an async context manager, for work that has no events to stop it (`voxline simulate`).
    """

    def __init__(
        self, out: TextIO, label: str = "thinking…", *, enabled: bool | None = None
    ) -> None:
        self.out = out
        self.label = label
        self.enabled = _is_terminal(out) if enabled is None else enabled
        self._task: asyncio.Task[None] | None = None
        self._shown = False

    def start(self, label: str | None = None) -> None:
        """Start (or restart) the clock; needs a running event loop."""
        self.stop()
        if label is not None:
            self.label = label
        if self.enabled:
            try:
                self._task = asyncio.get_running_loop().create_task(self._tick())
            except RuntimeError:  # called off the event loop: no clock rather than a crash
                self._task = None

    def stop(self) -> None:
        """Stop and erase the line; harmless when not running."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._shown = False

    async def _tick(self) -> None:
        started = asyncio.get_running_loop().time()
        while True:
            elapsed = asyncio.get_running_loop().time() - started
            self.out.write(f"\r\x1b[K  {self.label} {elapsed:.1f} s")
            self.out.flush()
            self._shown = True
            await asyncio.sleep(0.1)

    async def __aenter__(self) -> LiveTimer:
        self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # a closed or minimal stream
        return False


class TerminalView:
    """Renders session events as a transcript; knows nothing of how the reply is made."""

    def __init__(self, out: TextIO, *, debug: bool = False) -> None:
        self.out = out
        self.thinking = LiveTimer(out)
        self._debug = debug
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
        self.thinking.stop()
        if self._open_turn != turn.id:
            self.end_line()
            self.write("agent> ")
            self._open_turn = turn.id
            delta = delta.lstrip()  # the joint to the previous step belongs to one line only
        self.write(delta)

    def on_reply_finished(self, turn: BotTurn | None) -> None:
        self.thinking.stop()
        self.end_line()

    def on_tool_started(self, call: ToolCallRequest, turn: ToolCallTurn) -> None:
        self.thinking.stop()
        self.end_line()
        self.write(f"  [tool] {call.name}({call.arguments})\n")

    def on_tool_finished(self, call: ToolCallRequest, outcome: ToolOutcome, turn: Any) -> None:
        mark = "failed" if outcome.is_error else "->"
        self.write(f"  [tool] {call.name} {mark} {outcome.content[:200]}\n")
        self.thinking.start()  # the model now reads the result

    def on_approval(self, approval_id: str, call: ToolCallRequest, turn: ToolCallTurn) -> None:
        self.thinking.stop()
        self.write(
            f"  [approval needed] {call.name}({call.arguments}) id={approval_id}\n"
            f"  type /approve {approval_id} or /reject {approval_id} REASON\n"
        )

    def on_interrupted(self, turn: BotTurn | None) -> None:
        self.thinking.stop()
        self.end_line()
        self.write("  [interrupted]\n")

    def on_error(self, error: BaseException, where: str) -> None:
        """One line: the log's copy of this error, traceback and all, is left out unless
        `--debug`, so the line says where the rest is."""
        self.thinking.stop()
        self.end_line()
        hint = "" if self._debug else " (--debug shows the details)"
        self.write(f"  [error] {error or type(error).__name__}{hint}\n")


async def run_chat(
    agent: AgentRuntime,
    settings: Settings,
    conversation_id: str | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    debug: bool = False,
) -> None:
    """Interactive loop until /quit or end of input."""
    inp, out = stdin or sys.stdin, stdout or sys.stdout
    session = Session(agent, conversation_id=conversation_id, settings=settings, channel="terminal")
    view = TerminalView(out, debug=debug)
    view.attach(session)
    await session.start()
    view.end_line()
    view.write(f"(conversation {session.id}; /help for commands)\n")
    try:
        while True:
            view.end_line()  # an apology or a note may have left the agent's line open
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
            view.thinking.start()
            try:
                await session.send_text(text)
                await session.wait_idle()
            finally:
                view.thinking.stop()
    finally:
        view.thinking.stop()
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
        view.thinking.start()  # the tool runs (when approved) and the model tells the outcome
        try:
            if name == "/approve":
                await session.approvals.approve(approval_id)
            else:
                await session.approvals.reject(approval_id, reason or None)
        except (ApprovalNotFoundError, ApprovalStateError) as exc:
            view.thinking.stop()
            view.write(f"  {exc}\n")
        await session.wait_idle()
        view.thinking.stop()
    else:
        view.write(f"  unknown command {name}; /help lists them\n")
    return True


def _describe(data: dict[str, Any]) -> str:
    for key in ("content", "arguments", "digits", "target"):
        if data.get(key):
            prefix = f"{data['name']} " if data.get("name") else ""
            return prefix + str(data[key])[:120]
    return ""
