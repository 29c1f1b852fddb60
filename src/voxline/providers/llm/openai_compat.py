"""Chat Completions streaming for OpenAI and every server that imitates it.

Real servers differ from OpenAI in small ways that break naive clients (protocols.md §5): tool
call fragments without an `index`, every parallel call sent as index 0, whole calls in one chunk,
arguments as a JSON object, usage in a trailing chunk or never. `ChatChunkDecoder` absorbs all of
that on plain chunk dicts, so the same decoder also serves in-process engines that emit
OpenAI-style chunks without an HTTP hop.

A stream is complete only when the server says so. On the wire that is `data: [DONE]`; the SDK
consumes that line itself, so what we can see is the chunk that carries a `finish_reason`, which
every server sends before `[DONE]`. A stream that ends without one (a proxy or server that died
mid-answer but closed the body cleanly) is a provider failure, not a short reply: speaking half a
sentence as if it were the answer is worse than apologising or falling back.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncGenerator, Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolParam,
)

from voxline.guardrails.redact import redact_secrets, safe_url
from voxline.providers.llm.base import (
    ChatMessage,
    LLMError,
    LLMEvent,
    LLMRequest,
    MissingKeyError,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
    ToolDefinition,
    Usage,
)
from voxline.telemetry import counters

OPENAI_BASE_URL = "https://api.openai.com/v1"
_OPENAI_HOST = "api.openai.com"
# Local servers ignore the key, but the SDK refuses to start without one.
_PLACEHOLDER_KEY = "not-needed"


def one_line(text: str, limit: int = 300) -> str:
    """Collapse a provider's message to one bounded line: error bodies can be whole HTML pages.
    Secrets are masked first: servers echo keys back ("Incorrect API key provided: sk-…") and
    connection errors name URLs, credentials included; these messages reach logs and feeds."""
    flat = " ".join(redact_secrets(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def retryable_status(status: int) -> bool:
    """Whether another attempt (or another provider) may succeed after this HTTP status."""
    return status in (408, 409, 429) or status >= 500


def is_openai_host(base_url: str | None) -> bool:
    return base_url is None or urlsplit(base_url).hostname == _OPENAI_HOST


# --- request conversion ---------------------------------------------------------------------


def to_chat_messages(messages: list[ChatMessage]) -> list[ChatCompletionMessageParam]:
    return [_chat_message(m) for m in messages]


def _chat_message(message: ChatMessage) -> ChatCompletionMessageParam:
    content = message.content or ""
    if message.role == "system":
        return {"role": "system", "content": content}
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": content}
    if message.role == "assistant":
        if not message.tool_calls:
            return {"role": "assistant", "content": content}
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments or "{}"},
                }
                for call in message.tool_calls
            ],
        }
    if message.name:
        return {"role": "user", "content": content, "name": message.name}
    return {"role": "user", "content": content}


def to_chat_tools(tools: list[ToolDefinition]) -> list[ChatCompletionToolParam]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            },
        }
        for tool in tools
    ]


def to_tool_choice(choice: str) -> ChatCompletionToolChoiceOptionParam:
    """`auto`/`none`/`required` pass through; anything else names the one tool to call."""
    match choice:
        case "auto" | "none" | "required":
            return choice
        case _:
            return {"type": "function", "function": {"name": choice}}


# --- tool calls written as text -------------------------------------------------------------


class _Shape(Enum):
    UNKNOWN = "unknown"  # too little text to tell yet
    TEXT = "text"  # ordinary prose: release it
    CANDIDATE = "candidate"  # opens like a JSON tool call: hold it to the end


def _classify(text: str) -> _Shape:
    if not text:
        return _Shape.UNKNOWN
    if text.startswith("{"):
        return _Shape.CANDIDATE
    if text.startswith("["):
        rest = text[1:].lstrip()
        if not rest:
            return _Shape.UNKNOWN
        return _Shape.CANDIDATE if rest.startswith("{") else _Shape.TEXT
    if text.startswith("```"):
        header, newline, _ = text[3:].partition("\n")
        info = header.strip().lower()
        if not newline:
            return _Shape.UNKNOWN if "json".startswith(info) else _Shape.TEXT
        return _Shape.CANDIDATE if info in ("", "json") else _Shape.TEXT
    return _Shape.UNKNOWN if "```".startswith(text) else _Shape.TEXT


_FENCE = re.compile(r"\A```[ \t]*(?:json)?[ \t]*\n(?P<body>.*?)(?:```(?P<rest>.*))?\Z", re.S | re.I)


class TextToolCallParser:
    """Recovers tool calls that a model wrote as JSON in its reply text.

    Small local models (and servers started without a tool parser) answer a tool request with
    ```` ```json {"name": …, "arguments": …} ``` ```` instead of structured `tool_calls`. Such a
    reply must never reach the caller's ears, so text that opens like JSON or a JSON fence is held
    back until the reply ends; anything else is released as soon as its first characters show it
    is prose.
    """

    def __init__(self, tool_names: Collection[str]) -> None:
        self._tool_names = frozenset(tool_names)
        self._held = ""
        self._released = False

    def feed(self, text: str) -> str:
        """Return the part of `text` that is safe to show now."""
        if self._released:
            return text
        self._held += text
        if _classify(self._held.lstrip()) is _Shape.TEXT:
            self._released = True
            held, self._held = self._held, ""
            return held
        return ""

    def finish(self) -> tuple[str, list[ToolCallRequest]]:
        """Return the held text that is still prose, and the tool calls it contained."""
        held, self._held = self._held, ""
        parsed = self._parse(held)
        if parsed is None:
            return held, []
        calls, rest = parsed
        return rest, calls

    def _parse(self, text: str) -> tuple[list[ToolCallRequest], str] | None:
        stripped = text.strip()
        fence = _FENCE.match(stripped)
        payload = fence.group("body").strip() if fence else stripped
        try:
            value, end = json.JSONDecoder().raw_decode(payload)
        except json.JSONDecodeError:
            return None
        trailing = payload[end:].strip()
        if fence:
            if trailing:
                return None
            trailing = (fence.group("rest") or "").strip()
        items = value if isinstance(value, list) else [value]
        calls = [self._call(item) for item in items]
        if not calls or any(call is None for call in calls):
            return None
        return [call for call in calls if call is not None], trailing

    def _call(self, item: object) -> ToolCallRequest | None:
        if not isinstance(item, dict) or item.get("name") not in self._tool_names:
            return None
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError:
                return None
        if not isinstance(arguments, dict):
            return None
        return ToolCallRequest(
            id=f"call_{uuid.uuid4().hex[:24]}", name=item["name"], arguments=json.dumps(arguments)
        )


# --- stream decoding ------------------------------------------------------------------------


@dataclass
class _CallSlot:
    index: int
    id: str | None = None
    name: str | None = None


class ChatChunkDecoder:
    """Turns Chat Completions stream chunks (plain dicts) into normalised `LLMEvent`s.

    Every tool call gets a stable index 0, 1, 2… in order of first appearance, whatever index
    (or none) the server put on its fragments. A fragment starts a new call when its index was
    never seen, or when it brings a name with an id never seen while the call it would otherwise
    continue already has an id (parallel calls all sent as index 0, or with no index). Anything
    else continues the call with the same id, the same index, or (with neither) the latest call.
    """

    def __init__(
        self, *, tool_names: Collection[str] = (), parse_text_tool_calls: bool = False
    ) -> None:
        self._slots: list[_CallSlot] = []
        self.finish_reason: str | None = None  # set by the chunk that ends the reply
        self._by_index: dict[int, _CallSlot] = {}
        self._by_id: dict[str, _CallSlot] = {}
        self._usage: Usage | None = None
        self._text_calls = (
            TextToolCallParser(tool_names) if parse_text_tool_calls and tool_names else None
        )

    def feed(self, chunk: Mapping[str, Any]) -> list[LLMEvent]:
        events: list[LLMEvent] = []
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._usage = Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            finish_reason = choice.get("finish_reason")
            if isinstance(finish_reason, str) and finish_reason:
                self.finish_reason = finish_reason
            delta = choice.get("delta")
            if not isinstance(delta, Mapping):
                continue
            content = delta.get("content")
            if isinstance(content, str) and content:
                shown = self._text_calls.feed(content) if self._text_calls else content
                if shown:
                    events.append(TextDelta(shown))
            for fragment in delta.get("tool_calls") or ():
                if isinstance(fragment, Mapping):
                    event = self._tool_fragment(fragment)
                    if event is not None:
                        events.append(event)
        return events

    def finish(self) -> list[LLMEvent]:
        """Events owed at the end of the stream: held text, text tool calls, usage."""
        events: list[LLMEvent] = []
        if self._text_calls is not None:
            text, calls = self._text_calls.finish()
            if not self._slots:
                events.extend(
                    ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
                    for i, c in enumerate(calls)
                )
            if text.strip():
                events.append(TextDelta(text))
        if self._usage is not None:
            events.append(self._usage)
        return events

    def _tool_fragment(self, fragment: Mapping[str, Any]) -> ToolCallDelta | None:
        raw_index = fragment.get("index")
        raw_index = raw_index if isinstance(raw_index, int) else None
        call_id = fragment.get("id") or None
        function = fragment.get("function")
        function = function if isinstance(function, Mapping) else {}
        name = function.get("name") or None
        slot = self._slot_for(raw_index, call_id, name)
        new_id = None
        if call_id and slot.id is None:
            slot.id = new_id = str(call_id)
        new_name = None
        if name and slot.name is None:
            slot.name = new_name = str(name)
        arguments = _arguments_text(function.get("arguments"))
        if new_id is None and new_name is None and not arguments:
            return None
        return ToolCallDelta(index=slot.index, id=new_id, name=new_name, arguments=arguments)

    def _slot_for(self, raw_index: int | None, call_id: str | None, name: str | None) -> _CallSlot:
        if call_id and call_id in self._by_id:
            return self._by_id[call_id]
        if raw_index is not None:
            current = self._by_index.get(raw_index)
        else:
            current = self._slots[-1] if self._slots else None
        if current is None or (call_id and current.id and name):
            current = _CallSlot(index=len(self._slots))
            self._slots.append(current)
        if raw_index is not None:
            self._by_index[raw_index] = current
        if call_id:
            self._by_id[call_id] = current
        return current


def _arguments_text(arguments: object) -> str:
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments)


# --- the provider ---------------------------------------------------------------------------


class OpenAICompatibleLLM:
    """A Chat Completions model behind any OpenAI-compatible base URL.

    The official host needs a real key; a custom base URL (vLLM, Ollama, llama.cpp server, Groq
    with a key) gets a placeholder when none is given, because local servers ignore it.
    `parse_text_tool_calls` defaults to on for custom servers, whose tool parser may be off.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        label: str | None = None,
        parse_text_tool_calls: bool | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_retries: int = 1,
    ) -> None:
        official = is_openai_host(base_url)
        if not api_key:
            if official:
                raise MissingKeyError(
                    "openai: no API key; set OPENAI_API_KEY or VOXLINE_OPENAI_API_KEY"
                )
            api_key = _PLACEHOLDER_KEY
        self.model = model
        self.base_url = base_url or OPENAI_BASE_URL
        self.label = label or (f"openai:{model}" if official else f"openai-compatible:{model}")
        self._official = official
        self._parse_text_tool_calls = (
            (not official) if parse_text_tool_calls is None else parse_text_tool_calls
        )
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=self.base_url,
            timeout=openai.Timeout(timeout, connect=connect_timeout),
            max_retries=max_retries,
        )

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        counters.provider_request("llm", self.label)
        decoder = ChatChunkDecoder(
            tool_names=[tool.name for tool in request.tools],
            parse_text_tool_calls=self._parse_text_tool_calls,
        )
        try:
            chunks = await self._create(request)
            async with chunks:
                async for chunk in chunks:
                    for event in decoder.feed(chunk.to_dict(warnings=False)):
                        yield event
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        except json.JSONDecodeError as exc:  # a `data:` line that is not JSON
            raise LLMError(
                f"{self.label}: malformed stream: {one_line(str(exc))}", provider=self.label
            ) from exc
        if decoder.finish_reason is None:
            raise LLMError(
                f"{self.label}: the stream ended before the reply did (no finish_reason)",
                provider=self.label,
            )
        for event in decoder.finish():
            yield event

    async def _create(self, request: LLMRequest) -> openai.AsyncStream[ChatCompletionChunk]:
        tools = to_chat_tools(request.tools) if request.tools else openai.omit
        tool_choice = (
            to_tool_choice(request.tool_choice)
            if request.tools and request.tool_choice
            else openai.omit
        )
        limit = openai.omit if request.max_tokens is None else request.max_tokens
        return await self._client.chat.completions.create(
            model=self.model,
            messages=to_chat_messages(request.messages),
            stream=True,
            stream_options={"include_usage": True},
            tools=tools,
            tool_choice=tool_choice,
            temperature=openai.omit if request.temperature is None else request.temperature,
            # OpenAI's reasoning models refuse `max_tokens`; many compatible servers only know it.
            max_completion_tokens=limit if self._official else openai.omit,
            max_tokens=openai.omit if self._official else limit,
            extra_body=request.options or None,
        )

    def _error(self, exc: openai.OpenAIError) -> LLMError:
        counters.provider_failure("llm", self.label)
        if isinstance(exc, openai.APIConnectionError):
            detail = "timed out" if isinstance(exc, openai.APITimeoutError) else "cannot connect"
            where = safe_url(self.base_url)  # a base URL may carry user:password@
            return LLMError(f"{self.label}: {detail} to {where}", provider=self.label)
        if isinstance(exc, openai.APIStatusError):
            return LLMError(
                f"{self.label}: HTTP {exc.status_code}: {one_line(_api_message(exc))}",
                provider=self.label,
                retryable=retryable_status(exc.status_code),
            )
        if isinstance(exc, openai.APIError):  # an `{"error": …}` object inside the stream
            status = _body_status(exc.body)
            return LLMError(
                f"{self.label}: stream error: {one_line(exc.message)}",
                provider=self.label,
                retryable=status is None or retryable_status(status),
            )
        return LLMError(f"{self.label}: {one_line(str(exc))}", provider=self.label, retryable=False)

    async def aclose(self) -> None:
        await self._client.close()


def _api_message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
    return exc.message


def _body_status(body: object) -> int | None:
    """The HTTP-like status some servers (vLLM) put in an in-stream error's `code`."""
    code = body.get("code") if isinstance(body, Mapping) else None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return None
