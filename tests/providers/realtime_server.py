"""A Realtime server on loopback that speaks the GA event sequence of protocols.md §4.

It plays OpenAI's part for voxline's Realtime provider, with scripted answers and no model:

- **Session**: `session.created` first, `session.update` merged and answered with
  `session.updated` (a GA update must say `"type": "realtime"`).
- **Server VAD** on the appended audio (µ-law or PCM16, per the session's input format): loud
  20 ms chunks are speech, and `silence_duration_ms` of quiet ends it:
  `input_audio_buffer.speech_started` → `speech_stopped` → `committed` →
  `conversation.item.added`/`done` (the user's item) → the transcription (`…delta`,
  `…completed`, text from the script) → a response (`create_response`). Speech while a response
  streams cancels it (`interrupt_response`: `response.done` with status `cancelled`).
- **Responses** from the script, each `Reply` one response: `response.created` →
  `output_item.added` → `conversation.item.added` → `content_part.added` → audio and transcript
  deltas interleaved (paced by `Reply.delay`) → `output_audio.done` →
  `output_audio_transcript.done` → `content_part.done` → `output_item.done` →
  `conversation.item.done` → `response.done` → `rate_limits.updated`; or, for a `Reply` with a
  `call`, `function_call_arguments.delta`/`.done` in place of the content.
- **Client events**: `conversation.item.create`/`truncate`/`delete`, `response.create`/`cancel`,
  `input_audio_buffer.commit`/`clear`; everything malformed, unknown or out of place gets an
  `error` event, and the session goes on.

Tests may also drive a connection by hand (`Connection.send` any event, `Connection.drop` the
socket mid-response) to replay a recorded sequence. Every connection records what it received
(`received`, the decoded `audio`, `truncations`, `outputs`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.providers.realtime_items import (
    Call,
    Connection,
    Reply,
    new_id,
    stream_function_call,
    stream_speech,
)
from voxline.audio import mulaw_decode

__all__ = ["Call", "Connection", "FakeRealtimeServer", "Reply", "realtime_server"]

SPEECH_RMS = 600.0  # PCM16 level above which a 20 ms chunk counts as speech


def _error(message: str, code: str, event_id: str | None = None) -> dict[str, Any]:
    error = {"type": "invalid_request_error", "code": code, "message": message, "param": None}
    return {"type": "error", "error": error | {"event_id": event_id}}


class FakeRealtimeServer:
    """`async with FakeRealtimeServer(script) as server:` then point a client at
    `server.base_url` (the SDK's http form) or `server.ws_url`."""

    def __init__(
        self,
        script: Sequence[Reply] = (),
        *,
        api_key: str | None = None,
        vad: bool = True,
        respond: bool = True,
        transcription_delay: float = 0.02,
    ) -> None:
        """`vad=False, respond=False`: the server only answers the session and the items, and
        the test sends the rest (a replayed recording)."""
        self.script: deque[Reply] = deque(script)
        self.api_key = api_key
        self.vad = vad
        self.respond = respond
        self.transcription_delay = transcription_delay
        self.connections: list[Connection] = []
        self._server: Server | None = None
        self._port = 0

    async def __aenter__(self) -> FakeRealtimeServer:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._check, max_size=2**24
        )
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/v1"

    async def connection(self, index: int = 0) -> Connection:
        """The `index`th connection, once it is made (10 s at most)."""
        async with asyncio.timeout(10.0):
            while len(self.connections) <= index:  # noqa: ASYNC110 (polling a test fixture)
                await asyncio.sleep(0.01)
        return self.connections[index]

    def _check(self, ws: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != "/v1/realtime":
            return ws.respond(404, "not a Realtime endpoint\n")
        key = request.headers.get("Authorization")
        if self.api_key is not None and key != f"Bearer {self.api_key}":
            return ws.respond(401, "bad key\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        conn = Connection(ws, query.get("model", [""])[0], ws.request.headers)
        self.connections.append(conn)
        session = _Session(self, conn)
        await session.run()


class _Session:
    """One connection's conversation: VAD, responses, client events."""

    def __init__(self, server: FakeRealtimeServer, conn: Connection) -> None:
        self.server = server
        self.conn = conn
        self.conn.session = {
            "type": "realtime",
            "model": conn.model,
            "object": "realtime.session",
            "id": new_id("sess"),
            "output_modalities": ["audio"],
            "instructions": "",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
            },
            "tools": [],
            "tool_choice": "auto",
        }
        self.buffer = bytearray()  # input audio not yet committed
        self.received_bytes = 0
        self.speaking = False
        self.speech_item = ""
        self.speech_start_ms = 0
        self.quiet_ms = 0
        self.response: asyncio.Task[None] | None = None
        self.response_id = ""
        self.tasks: set[asyncio.Task[None]] = set()

    # -- formats -------------------------------------------------------------------------
    def _input(self) -> dict[str, Any]:
        return dict(self.conn.session["audio"]["input"])

    def _bytes_per_ms(self) -> float:
        fmt = self._input().get("format") or {}
        return 8.0 if fmt.get("type") in ("audio/pcmu", "audio/pcma") else 48.0

    def _pcm(self, chunk: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
        if self._bytes_per_ms() == 8.0:
            return mulaw_decode(chunk)
        return np.frombuffer(chunk[: len(chunk) // 2 * 2], dtype="<i2")

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        await self.conn.send({"type": "session.created", "session": self.conn.session})
        try:
            async for frame in self.conn.ws:
                await self._receive(frame)
        except ConnectionClosed:
            pass
        finally:
            for task in [*self.tasks, *([self.response] if self.response else [])]:
                task.cancel()

    async def _receive(self, frame: str | bytes) -> None:
        try:
            event = json.loads(frame)
        except (json.JSONDecodeError, UnicodeDecodeError):
            await self.conn.send(_error("The frame is not valid JSON.", "invalid_json"))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            await self.conn.send(_error("An event must be an object with a type.", "invalid_event"))
            return
        self.conn.received.append(event)
        handler = getattr(self, "_on_" + event["type"].replace(".", "_"), None)
        if handler is None:
            await self.conn.send(
                _error(
                    f"Unknown event type {event['type']!r}.", "unknown_event", event.get("event_id")
                )
            )
            return
        await handler(event)

    # -- session and input audio -----------------------------------------------------------
    async def _on_session_update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, dict) or update.get("type") != "realtime":
            await self.conn.send(_error("session.type must be 'realtime'.", "invalid_session"))
            return
        session = self.conn.session
        for key, value in update.items():
            if key == "audio" and isinstance(value, dict):
                for side in ("input", "output"):
                    session["audio"][side].update(value.get(side) or {})
            else:
                session[key] = value
        await self.conn.send({"type": "session.updated", "session": session})

    async def _on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        try:
            audio = base64.b64decode(event.get("audio", ""), validate=True)
        except (binascii.Error, ValueError):
            await self.conn.send(_error("audio is not base64.", "invalid_audio"))
            return
        self.conn.audio.extend(audio)
        self.buffer.extend(audio)
        detection = self._input().get("turn_detection")
        if not self.server.vad or not detection:
            self.received_bytes += len(audio)
            return
        step = int(20 * self._bytes_per_ms())
        for start in range(0, len(audio), step):
            chunk = audio[start : start + step]
            self.received_bytes += len(chunk)
            await self._vad(chunk, detection)

    async def _vad(self, chunk: bytes, detection: dict[str, Any]) -> None:
        pcm = self._pcm(chunk).astype(np.float64)
        loud = pcm.size > 0 and float(np.sqrt(np.mean(pcm**2))) > SPEECH_RMS
        now_ms = int(self.received_bytes / self._bytes_per_ms())
        if loud and not self.speaking:
            self.speaking, self.quiet_ms = True, 0
            self.speech_item = new_id("item")
            self.speech_start_ms = now_ms
            await self.conn.send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": now_ms,
                    "item_id": self.speech_item,
                }
            )
            if detection.get("interrupt_response", True) and self.response is not None:
                self.response.cancel()
        elif self.speaking:
            self.quiet_ms = 0 if loud else self.quiet_ms + 20
            if self.quiet_ms >= int(detection.get("silence_duration_ms", 500)):
                self.speaking = False
                end_ms = now_ms - self.quiet_ms
                await self.conn.send(
                    {
                        "type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": end_ms,
                        "item_id": self.speech_item,
                    }
                )
                await self._commit(self.speech_item, create=detection.get("create_response", True))

    async def _on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        if len(self.buffer) < 100 * self._bytes_per_ms():
            await self.conn.send(
                _error(
                    "buffer too small: at least 100ms of audio.", "input_audio_buffer_commit_empty"
                )
            )
            return
        await self._commit(new_id("item"), create=False)

    async def _on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self.buffer.clear()
        await self.conn.send({"type": "input_audio_buffer.cleared"})

    async def _commit(self, item_id: str, *, create: bool) -> None:
        self.buffer.clear()
        previous = self.conn.items[-1]["id"] if self.conn.items else None
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.conn.items.append(item)
        await self.conn.send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }
        )
        await self.conn.send(
            {"type": "conversation.item.added", "item": item, "previous_item_id": previous}
        )
        await self.conn.send(
            {"type": "conversation.item.done", "item": item, "previous_item_id": previous}
        )
        reply = self.server.script[0] if self.server.script else None
        text = reply.user if reply is not None and reply.user else "(unclear speech)"
        task = asyncio.create_task(self._transcribe(item_id, text))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if create:
            await self._start_response()

    async def _transcribe(self, item_id: str, text: str) -> None:
        if not self._input().get("transcription"):
            return
        await asyncio.sleep(self.server.transcription_delay)
        base = {"item_id": item_id, "content_index": 0}
        await self.conn.send(
            {"type": "conversation.item.input_audio_transcription.delta", **base, "delta": text}
        )
        await self.conn.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                **base,
                "transcript": text,
                "usage": {"type": "duration", "seconds": 1.0},
            }
        )

    # -- conversation items --------------------------------------------------------------
    async def _on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") not in (
            "message",
            "function_call",
            "function_call_output",
        ):
            await self.conn.send(
                _error("item must be a message or a function call.", "invalid_item")
            )
            return
        item = {"id": new_id("item"), "object": "realtime.item", "status": "completed", **item}
        if item["type"] == "function_call_output":
            self.conn.outputs.append(item)
        at, ids = len(self.conn.items), [known["id"] for known in self.conn.items]
        wanted = event.get("previous_item_id")  # "root": the start; absent or null: the end
        if wanted is not None and wanted != "root" and wanted not in ids:
            await self.conn.send(_error(f"no item {wanted!r}.", "item_not_found"))
            return
        if wanted is not None:
            at = 0 if wanted == "root" else ids.index(wanted) + 1
        previous = self.conn.items[at - 1]["id"] if at else None
        self.conn.items.insert(at, item)
        await self.conn.send(
            {"type": "conversation.item.added", "item": item, "previous_item_id": previous}
        )
        await self.conn.send(
            {"type": "conversation.item.done", "item": item, "previous_item_id": previous}
        )

    async def _on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        known = any(
            item["id"] == item_id and item.get("role") == "assistant" for item in self.conn.items
        )
        if not known:
            await self.conn.send(_error(f"no assistant item {item_id!r}.", "item_not_found"))
            return
        fields = {k: event.get(k) for k in ("item_id", "content_index", "audio_end_ms")}
        self.conn.truncations.append(fields)
        await self.conn.send({"type": "conversation.item.truncated", **fields})

    async def _on_conversation_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        self.conn.items = [item for item in self.conn.items if item["id"] != item_id]
        await self.conn.send({"type": "conversation.item.deleted", "item_id": item_id})

    # -- responses -----------------------------------------------------------------------
    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if not self.server.respond:
            return
        if self.response is not None:
            await self.conn.send(
                _error("a response is in progress.", "conversation_already_has_active_response")
            )
            return
        await self._start_response()

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        if self.response is None:
            await self.conn.send(_error("no active response.", "response_cancel_not_active"))
            return
        self.response.cancel()

    async def _start_response(self) -> None:
        if not self.server.script:
            await self.conn.send(
                _error("the fake server's script is exhausted.", "script_exhausted")
            )
            return
        reply = self.server.script.popleft()
        self.response_id = new_id("resp")
        self.response = asyncio.create_task(self._respond(self.response_id, reply))

    async def _respond(self, response_id: str, reply: Reply) -> None:
        base = {"response_id": response_id}
        output: list[dict[str, Any]] = []
        status, reason = reply.status, None
        await self.conn.send(
            {
                "type": "response.created",
                "response": {
                    "id": response_id,
                    "object": "realtime.response",
                    "status": "in_progress",
                    "output": [],
                },
            }
        )
        try:
            if reply.call is not None:
                output.append(await stream_function_call(self.conn, base, reply.call))
            else:
                output.append(await stream_speech(self.conn, base, reply))
        except asyncio.CancelledError:
            status, reason = "cancelled", "turn_detected"
        finally:
            self.response = None
            details = {"type": status, "reason": reason} if reason else None
            await self.conn.send(
                {
                    "type": "response.done",
                    "response": {
                        "id": response_id,
                        "object": "realtime.response",
                        "status": status,
                        "status_details": details,
                        "output": output,
                        "usage": {"total_tokens": 10, "input_tokens": 6, "output_tokens": 4},
                    },
                }
            )
            await self.conn.send(
                {
                    "type": "rate_limits.updated",
                    "rate_limits": [
                        {"name": "tokens", "limit": 1000, "remaining": 990, "reset_seconds": 1.0}
                    ],
                }
            )


@contextlib.asynccontextmanager
async def realtime_server(
    script: Sequence[Reply] = (), **options: Any
) -> AsyncIterator[FakeRealtimeServer]:
    async with FakeRealtimeServer(script, **options) as server:
        yield server
