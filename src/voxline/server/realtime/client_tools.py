"""Function tools the Realtime client executes, offered to the agent's model beside its own.

OpenAI's protocol leaves function calls to the client: the server streams the call, the client
runs it and sends a `function_call_output` item (then `response.create`). voxline's reply engine
instead runs tools itself, with timeouts, and loops back to the model. The two meet here, with
the same idea as the debug feed's client tools (`voxline.tools.client`): the tool's body is a
wait for the client's answer. The engine starts the call, the bridge shows it to the client,
the client's output resolves the wait, and the engine carries on with the model exactly as it
does after any tool, so history, timeouts and interruption rules stay the engine's.

A client that never answers makes the call fail after `CLIENT_TOOL_TIMEOUT` ("the tool failed:
timed out"), and a socket that closes fails every wait at once, so a session never hangs on a
client that is gone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from voxline.providers.llm.base import ToolDefinition
from voxline.server.realtime.config import FunctionDef
from voxline.tools.base import RunContext, ToolOptions
from voxline.tools.client import ClientToolError

CLIENT_TOOL_TIMEOUT = 120.0
"""Seconds a client may take to answer a function call (it may ask a human, call an API...)."""


class ClientCalls:
    """Function calls waiting for the client's output, by call id."""

    def __init__(self) -> None:
        self._waits: dict[str, asyncio.Future[str]] = {}

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._waits

    def expect(self, call_id: str) -> asyncio.Future[str]:
        """The wait for `call_id`, made on first use (the client may answer before the tool's
        body has even started)."""
        wait = self._waits.get(call_id)
        if wait is None:
            wait = self._waits[call_id] = asyncio.get_running_loop().create_future()
        return wait

    async def wait(self, call_id: str) -> str:
        try:
            return await self.expect(call_id)
        finally:
            self._waits.pop(call_id, None)

    def resolve(self, call_id: str, output: str) -> bool:
        """The client's output; False when no call of that id waits (unknown, or timed out)."""
        wait = self._waits.get(call_id)
        if wait is None or wait.done():
            return False
        wait.set_result(output)
        return True

    def forget(self, call_id: str) -> None:
        wait = self._waits.pop(call_id, None)
        if wait is not None and not wait.done():
            wait.cancel()

    def fail_all(self, reason: str) -> None:
        for wait in self._waits.values():
            if not wait.done():
                wait.set_exception(ClientToolError(reason))
                wait.exception()  # retrieved: a wait nobody awaits any more is not an error
        self._waits.clear()


class RealtimeFunctionTool:
    """A `Tool` whose body is the client's `function_call_output`."""

    def __init__(self, definition: FunctionDef, calls: ClientCalls) -> None:
        self.name = definition.name
        self.description = definition.description
        self.parameters = definition.parameters
        self.options = ToolOptions(timeout=CLIENT_TOOL_TIMEOUT)
        self._calls = calls

    def __repr__(self) -> str:
        return f"RealtimeFunctionTool({self.name!r})"

    def definition(self) -> ToolDefinition:
        return ToolDefinition(self.name, self.description, self.parameters)

    async def invoke(self, arguments: dict[str, Any], ctx: RunContext) -> str:
        return await self._calls.wait(ctx.call_id)
