"""Tool calling for a small local model: a JSON reply format, its schema, and a streaming parser.

Qwen2.5-Coder-1.5B does not emit structured tool calls on its own (it writes fenced JSON, and
only sometimes). So when tools are offered the model answers with one JSON object, constrained by
a JSON schema at sampling time so it cannot be malformed:

    {"wants": "<the request in a few words>", "tool": "none", "reply": "<text for the user>"}
    {"wants": "<the request in a few words>", "tool": "<name>", "arguments": {...}}

Naming the request first, then choosing among the tool names or an explicit "none", with two
generic examples of "none", is what made this model stop calling a weather tool for "What is the
capital of France?" (measured in `benchmarks/local_models.py`; a bare reply-or-calls schema
over-called tools on general questions).

`ReplyParser` turns that stream back into provider events: the reply string is decoded and
streamed as `TextDelta`s while it is generated (so speech can start early), a call becomes a
`ToolCallDelta`, and raw JSON never reaches the user. If the model ever writes a fenced ```json
block inside its reply, a block that names a known tool becomes a call and any other is dropped.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from voxline.providers.llm.base import (
    ChatMessage,
    LLMError,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
    ToolDefinition,
)

NO_TOOL = "none"
_FENCE = "```"
_FENCED_BLOCK = re.compile(r"```[a-zA-Z]*\s*(.*?)\s*(?:```|$)", re.DOTALL)
_HEAD = re.compile(
    r'\s*\{\s*"wants"\s*:\s*"(?:[^"\\]|\\.)*"\s*,\s*"tool"\s*:\s*"([^"]*)"\s*,'
    r'\s*"(?:reply|arguments)"\s*:'
)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_WANTS = {"type": "string", "maxLength": 60}


def tool_instructions(tools: Sequence[ToolDefinition], *, reply_only: bool = False) -> str:
    """The system-prompt section that teaches the model the tools and the reply format."""
    lines = ["", "Tools:"]
    for tool in tools:
        arguments = json.dumps(tool.parameters.get("properties", {}), separators=(",", ":"))
        lines.append(f"- {tool.name}: {tool.description} Arguments: {arguments}")
    lines += [
        "",
        'Answer with one JSON object. First write "wants": what the user wants, in a few words. '
        'Then "tool": the tool whose description is exactly that, or "none" when no tool does '
        "it (greetings, chat, facts, maths, jokes).",
        '{"wants": "...", "tool": "none", "reply": "<what you say to the user>"}',
        '{"wants": "...", "tool": "<tool name>", "arguments": {...}}  (argument values from the '
        "user's words; never guess a tool's result)",
        "Most requests need no tool. Examples:",
        'User: Who painted the Mona Lisa? -> {"wants": "a fact about art", "tool": "none", '
        '"reply": "Leonardo da Vinci painted it."}',
        'User: What is the capital of Spain? -> {"wants": "a geography fact", "tool": "none", '
        '"reply": "Madrid."}',
    ]
    if reply_only:
        lines.append('The tool results are above: now use them in your reply ("tool": "none").')
    return "\n".join(lines)


def output_schema(tools: Sequence[ToolDefinition], *, allow_reply: bool = True) -> dict[str, Any]:
    """A JSON schema admitting a reply, or one call to one of `tools` with valid arguments."""
    shapes: list[dict[str, Any]] = []
    if allow_reply or not tools:
        shapes.append(_shape(NO_TOOL, "reply", {"type": "string"}))
    for tool in tools:
        shapes.append(_shape(tool.name, "arguments", tool.parameters or {"type": "object"}))
    return shapes[0] if len(shapes) == 1 else {"oneOf": shapes}


def _shape(tool: str, field: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"wants": _WANTS, "tool": {"const": tool}, field: value},
        "required": ["wants", "tool", field],
        "additionalProperties": False,
    }


def chat_messages(messages: Sequence[ChatMessage], system_suffix: str = "") -> list[dict[str, str]]:
    """OpenAI-style messages for llama.cpp's chat template, in the model's own reply format.

    Past tool calls are shown as the JSON the model would have written, and tool results as
    user-side notes, so the history teaches the same format the schema enforces. System messages
    are merged into one leading message because the chat template accepts only that.
    """
    system = [m.content or "" for m in messages if m.role == "system"]
    result: list[dict[str, str]] = []
    if system or system_suffix:
        result.append({"role": "system", "content": "\n\n".join(system) + system_suffix})
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "assistant" and message.tool_calls:
            calls = [
                json.dumps(
                    {
                        "wants": "tool use",
                        "tool": call.name,
                        "arguments": _loose_arguments(call.arguments),
                    }
                )
                for call in message.tool_calls
            ]
            result.append({"role": "assistant", "content": "\n".join(calls)})
        elif message.role == "tool":
            label = message.name or "the tool"
            result.append(
                {"role": "user", "content": f"[result of {label}]: {message.content or ''}"}
            )
        else:
            result.append({"role": message.role, "content": message.content or ""})
    return result


def _loose_arguments(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments


class ReplyParser:
    """Incremental parser for the constrained JSON reply; `feed` and `finish` return events."""

    def __init__(self, tools: Sequence[ToolDefinition]) -> None:
        self._tool_names = {tool.name for tool in tools}
        self._raw = ""
        self._tool: str | None = None
        self._pos = 0  # next raw index to decode inside the reply string
        self._reply_open = False
        self._reply_done = False
        self._fence = FenceFilter(self._tool_names)

    def feed(self, text: str) -> list[LLMEvent]:
        self._raw += text
        if self._tool is None:
            match = _HEAD.match(self._raw)
            if match is None:
                return []
            self._tool = match.group(1)
            self._pos = match.end()
        if self._tool != NO_TOOL or self._reply_done:
            return []
        if not self._reply_open:
            rest = self._raw[self._pos :].lstrip()
            if not rest:
                return []
            self._pos = len(self._raw) - len(rest) + 1  # past the opening quote
            self._reply_open = True
        return self._fence.feed(self._decode_reply())

    def finish(self) -> list[LLMEvent]:
        if self._tool == NO_TOOL:
            return self._fence.finish()
        if self._tool is not None:
            return self._tool_call_events()
        # The model ignored the format (no grammar, or a truncated start): treat it as prose.
        fallback = FenceFilter(self._tool_names)
        return fallback.feed(self._raw) + fallback.finish()

    def _decode_reply(self) -> str:
        """Decode as much of the JSON string as is complete, leaving partial escapes for later."""
        out: list[str] = []
        raw, pos = self._raw, self._pos
        while pos < len(raw):
            char = raw[pos]
            if char == '"':
                self._reply_done = True
                pos += 1
                break
            if char != "\\":
                out.append(char)
                pos += 1
                continue
            if pos + 1 >= len(raw):
                break
            code = raw[pos + 1]
            if code != "u":
                out.append(_ESCAPES.get(code, code))
                pos += 2
                continue
            decoded = _unicode_escape(raw, pos)
            if decoded is None:
                break
            text, pos = decoded
            out.append(text)
        self._pos = pos
        return "".join(out)

    def _tool_call_events(self) -> list[LLMEvent]:
        try:
            value = json.loads(self._raw)
            calls = [{"name": value["tool"], "arguments": value["arguments"]}]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LLMError(
                "the local model's tool call was cut off or malformed",
                provider="local",
                retryable=False,
            ) from exc
        return _call_events(calls, self._tool_names)


def _unicode_escape(raw: str, pos: int) -> tuple[str, int] | None:
    """Decode `\\uXXXX` at `pos` (and the low half of a surrogate pair); None while partial."""
    if pos + 6 > len(raw):
        return None
    code = int(raw[pos + 2 : pos + 6], 16)
    if 0xD800 <= code < 0xDC00:
        if pos + 12 > len(raw):
            return None
        low = int(raw[pos + 8 : pos + 12], 16)
        return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), pos + 12
    return chr(code), pos + 6


def _call_events(calls: Any, tool_names: set[str]) -> list[LLMEvent]:
    events: list[LLMEvent] = []
    if not isinstance(calls, list):
        return events
    for call in calls:
        if not isinstance(call, dict) or call.get("name") not in tool_names:
            continue
        arguments = call.get("arguments", {})
        events.append(
            ToolCallDelta(
                index=len(events),
                id=f"call_{uuid.uuid4().hex[:12]}",
                name=call["name"],
                arguments=json.dumps(arguments if isinstance(arguments, dict) else {}),
            )
        )
    return events


class FenceFilter:
    """Streams prose through, but holds back fenced code blocks and resolves them at the end.

    A fenced JSON object naming a known tool (as `name` or `tool`, alone or in a `tool_calls`
    list) becomes a call; any other fenced block is dropped, since it would be read aloud as
    symbols.
    """

    def __init__(self, tool_names: set[str]) -> None:
        self._tool_names = tool_names
        self._held = ""
        self._fenced = False

    def feed(self, text: str) -> list[LLMEvent]:
        if self._fenced:
            self._held += text
            return []
        pending = self._held + text
        start = pending.find(_FENCE)
        if start >= 0:
            self._fenced = True
            self._held = pending[start:]
            return _text(pending[:start])
        keep = _partial_fence_suffix(pending)
        self._held = pending[len(pending) - keep :] if keep else ""
        return _text(pending[: len(pending) - keep])

    def finish(self) -> list[LLMEvent]:
        held, self._held = self._held, ""
        if not self._fenced:
            return _text(held)
        events: list[LLMEvent] = []
        calls: list[Any] = []
        prose: list[str] = []
        last = 0
        for block in _FENCED_BLOCK.finditer(held):
            prose.append(held[last : block.start()])
            last = block.end()
            calls += _calls_in_block(block.group(1))
        prose.append(held[last:])
        events += _text(" ".join(part.strip() for part in prose if part.strip()))
        events += _call_events(calls, self._tool_names)
        return events


def _partial_fence_suffix(text: str) -> int:
    """How many trailing backticks might be the start of a fence still arriving."""
    for size in (2, 1):
        if text.endswith(_FENCE[:size]):
            return size
    return 0


def _calls_in_block(body: str) -> list[Any]:
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return []
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        return list(value["tool_calls"])
    if isinstance(value, dict) and "tool" in value:
        return [{"name": value["tool"], "arguments": value.get("arguments", {})}]
    if isinstance(value, dict) and "name" in value:
        return [value]
    return value if isinstance(value, list) else []


def _text(text: str) -> list[LLMEvent]:
    return [TextDelta(text)] if text else []
