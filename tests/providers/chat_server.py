"""A loopback HTTP server that replays scripted LLM API replies, for tests that use real SDKs.

Tests drive the official `openai` and `anthropic` clients against it, so the bytes on the wire
are exactly what a real server would send: Server-Sent Events (`data:` lines, optional `event:`
names, `data: [DONE]`) or a plain JSON body with any status.

Usage, inside a test's event loop::

    async with ChatServer([text_reply("Hello", " there")]) as server:
        llm = OpenAICompatibleLLM("m", base_url=server.base_url)
        ...
        assert server.requests[0].body["model"] == "m"

or from synchronous code (e.g. a CLI runner with its own event loop), on a background thread::

    with ChatServer([text_reply("Hi")]) as server:
        run_cli("--llm", f"openai-compatible:{server.base_url}#m")

Every request (any method, any path) takes the next scripted reply; `server.requests` records
what arrived. When the script runs out the server answers HTTP 418 with an error body that says so,
which fails the test loudly instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

# An SSE event: a dict (sent as `data: <json>`), a string (sent verbatim, e.g. "[DONE]"), or an
# `(event name, dict)` pair for APIs that name their events (Anthropic).
SSEEvent = dict[str, Any] | str | tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class SSE:
    """A `text/event-stream` reply. `truncate` drops the connection after the events instead of
    ending the response properly (a server dying mid-answer)."""

    events: Sequence[SSEEvent]
    status: int = 200
    truncate: bool = False


@dataclass(frozen=True)
class JSONReply:
    """A plain JSON reply, typically an error: `JSONReply({"error": {...}}, status=401)`."""

    body: Any
    status: int = 200


Reply = SSE | JSONReply


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body, or None


@dataclass
class ChatServer:
    """Serves `replies` in order, or asks `replies(request)` when it is a function."""

    replies: Iterable[Reply] | Callable[[ReceivedRequest], Reply] = ()
    requests: list[ReceivedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._responder = self.replies if callable(self.replies) else None
        self._queue: deque[Reply] = deque() if callable(self.replies) else deque(self.replies)
        self._server: asyncio.Server | None = None
        self._port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def root_url(self) -> str:
        """`http://127.0.0.1:PORT`: the base URL for the Anthropic SDK."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`: the base URL for the OpenAI SDK."""
        return f"{self.root_url}/v1"

    def add(self, *replies: Reply) -> None:
        """Script more replies (from any thread)."""
        self._queue.extend(replies)

    # --- running in the caller's event loop ---

    async def __aenter__(self) -> ChatServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- running on a background thread, for synchronous callers ---

    def __enter__(self) -> ChatServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve_forever, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("chat server did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve_forever(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        loop.run_until_complete(self.__aenter__())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self.__aexit__(None, None, None))
        loop.close()

    # --- HTTP ---

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is not None:
                self.requests.append(request)
                await _write_reply(writer, self._next_reply(request))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _next_reply(self, request: ReceivedRequest) -> Reply:
        if self._responder is not None:
            return self._responder(request)
        if self._queue:
            return self._queue.popleft()
        message = f"chat_server: no scripted reply left for {request.method} {request.path}"
        return JSONReply({"error": {"message": message, "type": "test_script"}}, status=418)


async def _read_request(reader: asyncio.StreamReader) -> ReceivedRequest | None:
    request_line = await reader.readline()
    if not request_line:
        return None
    method, path, _ = request_line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    raw = await reader.readexactly(length) if length else b""
    return ReceivedRequest(method, path, headers, json.loads(raw) if raw else None)


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 418: "Teapot"}


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in {**headers, "connection": "close"}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _write_reply(writer: asyncio.StreamWriter, reply: Reply) -> None:
    if isinstance(reply, JSONReply):
        body = json.dumps(reply.body).encode()
        headers = {"content-type": "application/json", "content-length": str(len(body))}
        writer.write(_head(reply.status, headers) + body)
        await writer.drain()
        return
    headers = {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        "transfer-encoding": "chunked",
    }
    writer.write(_head(reply.status, headers))
    for event in reply.events:
        data = _sse_bytes(event)
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()
    if not reply.truncate:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _sse_bytes(event: SSEEvent) -> bytes:
    if isinstance(event, tuple):
        name, payload = event
        return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()
    data = event if isinstance(event, str) else json.dumps(event)
    return f"data: {data}\n\n".encode()


# --- OpenAI Chat Completions chunk builders ---------------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish_reason: str | None = None,
    chunk_id: str = "chatcmpl-1",
    model: str = "test-model",
    usage: dict[str, int] | None = None,
    choices: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk` object, shaped as OpenAI sends it."""
    if choices is None:
        choices = [
            {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
        ]
    body: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def usage_chunk(prompt_tokens: int = 10, completion_tokens: int = 5) -> dict[str, Any]:
    """The trailing chunk that `stream_options.include_usage` asks for: no choices, only usage."""
    return chunk(
        choices=[],
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    )


def text_reply(*pieces: str, usage: tuple[int, int] | None = (10, 5)) -> SSE:
    """A complete streamed text answer: role chunk, one chunk per piece, stop, usage, [DONE]."""
    events: list[SSEEvent] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces]
    events.append(chunk(finish_reason="stop"))
    if usage is not None:
        events.append(usage_chunk(*usage))
    events.append("[DONE]")
    return SSE(events)
