"""Client tools: declared in agent JSON, answered by whoever holds the call's debug feed.

The tool itself only knows its declaration. Where a call is served, the server puts a
`ClientToolTransport` in the session's user data under `CLIENT_TOOLS_KEY`; the transport carries
the request to the feed client and brings its answer back (possibly through another worker). The
executor's timeout bounds the wait like any other tool's, so a client that never answers ends as
"the tool failed: timed out ...", and a session with no transport fails fast instead of hanging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from voxline.providers.llm.base import ToolDefinition
from voxline.tools.base import RunContext, ToolOptions

CLIENT_TOOLS_KEY = "voxline.client_tools"
NO_TRANSPORT = "no API client can answer this tool here (client tools need a debug feed client)"


class ClientToolError(RuntimeError):
    """The client answered with an error, or no client can be reached; the message says which."""


@dataclass(frozen=True)
class ClientToolCall:
    conversation_id: str
    call_id: str
    name: str
    arguments: dict[str, Any]


@runtime_checkable
class ClientToolTransport(Protocol):
    async def call_client_tool(self, call: ClientToolCall) -> Any:
        """The client's result; raises `ClientToolError` when the client reports a failure."""
        ...


class ClientTool:
    """A `Tool` whose body runs in the API client."""

    def __init__(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        options: ToolOptions | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.parameters = parameters
        self.options = options or ToolOptions()

    def __repr__(self) -> str:
        return f"ClientTool({self.name!r})"

    def definition(self) -> ToolDefinition:
        return ToolDefinition(self.name, self.description, self.parameters)

    async def invoke(self, arguments: dict[str, Any], ctx: RunContext) -> Any:
        transport = ctx.user_data.get(CLIENT_TOOLS_KEY)
        if not isinstance(transport, ClientToolTransport):
            raise ClientToolError(NO_TRANSPORT)
        call = ClientToolCall(ctx.conversation_id, ctx.call_id, self.name, dict(arguments))
        return await transport.call_client_tool(call)
