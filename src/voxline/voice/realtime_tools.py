"""The model's function calls on a Realtime session, run by voxline's `ToolExecutor`.

Split from `RealtimeVoiceEngine` (`voxline.voice.realtime`) because running a call is one job
with its own state: the tasks in flight, the turns and events each call records, and the items
that carry its result back to the model. When to ask the model to go on is the engine's
business (it knows which response asked and whether one is speaking), so each finished call
is handed back to it through `on_finished`.

- Each call runs as a task of the session's group (timeouts, retries, breaker and approvals
  are the executor's), with the `RunContext` the session makes (`Session.run_context`,
  without `say`).
- The result is recorded as a `ToolResultTurn` and sent as `function_call_output`; when the
  socket that asked has been redialled since, the call item is sent again first, since the new
  server never saw it.
- A call cancelled because the conversation ended records `STOPPED`, so the history says it
  may not have finished.
- An approval decided by a human: the session runs the tool and records a fresh call/result
  pair, which `on_approval_resolved` sends as items (the session's `respond()` that follows
  asks the model for the answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from voxline.conversation.session import Session
from voxline.conversation.turns import ToolCallTurn
from voxline.providers.llm.base import ToolCallRequest
from voxline.providers.realtime import events as wire
from voxline.providers.realtime.client import RealtimeClient
from voxline.providers.realtime.history import approved_pair
from voxline.store.base import ApprovalRecord
from voxline.tools.base import RunContext, ToolOutcome
from voxline.tools.executor import ToolExecutor

STOPPED = "the tool was stopped because the conversation ended; it may not have finished"


class RealtimeToolCalls:
    """Runs the function calls a Realtime model asks for and sends their results back."""

    def __init__(
        self,
        session: Session,
        client: RealtimeClient,
        executor: ToolExecutor,
        *,
        on_finished: Callable[[str], None],
    ) -> None:
        self.session = session
        self.client = client
        self.executor = executor
        self._on_finished = on_finished  # a call's result was sent (not when it was cancelled)
        self.running: dict[str, asyncio.Task[None]] = {}  # call id -> its task, until it ends

    def start(self, item: Any, response_calls: list[str] | None) -> bool:
        """Start the call a finished `function_call` item asks for; `response_calls` (the
        response in flight's call ids, if any) gets its id. False for a call with no id or one
        already running."""
        call = ToolCallRequest(
            id=str(item.get("call_id") or item.get("id") or ""),
            name=str(item.get("name") or ""),
            arguments=str(item.get("arguments") or "{}"),
        )
        if not call.id or call.id in self.running:
            return False
        turn = self.session.turns.add_tool_call(call.id, call.name, call.arguments)
        if response_calls is not None:
            response_calls.append(call.id)
        self.session.bus.emit("tool_started", call=call, turn=turn)
        generation = self.client.generation
        task = self.session.tasks.spawn(self._run(call, turn, generation), name=f"tool {call.name}")
        self.running[call.id] = task
        return True

    async def wait(self) -> None:
        """Wait for the calls that started, so their real results are recorded (each is
        bounded by its timeout)."""
        running = [task for task in self.running.values() if not task.done()]
        if running:
            await asyncio.wait(running)

    async def _run(self, call: ToolCallRequest, turn: ToolCallTurn, generation: int) -> None:
        try:
            outcome = await self.executor.run(call, self._context(call.id))
        except asyncio.CancelledError:
            self._record(call, ToolOutcome(call.id, call.name, STOPPED, is_error=True))
            self.running.pop(call.id, None)
            raise
        if outcome.approval_id:
            turn.approval_id = outcome.approval_id
            self.session.bus.emit(
                "approval_requested", approval_id=outcome.approval_id, call=call, turn=turn
            )
        self._record(call, outcome)
        if generation != self.client.generation:  # the server that asked is gone: say both
            self.client.send(wire.function_call_item(call.id, call.name, call.arguments))
        self.client.send(wire.function_call_output(call.id, outcome.content))
        self.running.pop(call.id, None)
        self._on_finished(call.id)

    def _record(self, call: ToolCallRequest, outcome: ToolOutcome) -> None:
        result = self.session.turns.add_tool_result(
            call.id, call.name, outcome.content, is_error=outcome.is_error
        )
        self.session.bus.emit("tool_finished", call=call, outcome=outcome, turn=result)

    def _context(self, call_id: str) -> RunContext:
        return self.session.run_context(call_id, can_say=False)

    def on_approval_resolved(self, approval: ApprovalRecord) -> None:
        """The session ran a decided approval and recorded a fresh call/result pair: send both,
        and have the session's `respond()` that follows ask this model for the answer."""
        pair = approved_pair(self.session.turns.all(), approval.id)
        if pair is None:
            return
        call, result = pair
        self.client.send(wire.function_call_item(call.call_id, call.name, call.arguments))
        self.client.send(wire.function_call_output(call.call_id, result.content))
        # the session's `respond()` that follows asks this model (see `set_responder`)
