"""What the fake Realtime server says and keeps: scripted replies, a connection's record, and the
event sequences of a response's output item (a spoken message or a function call)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed


@dataclass
class Call:
    name: str
    arguments: dict[str, Any]


@dataclass
class Reply:
    """One scripted response: `transcript` spoken as `audio` (in the session's output format),
    sent in `chunk`-byte deltas every `delay` seconds; or a function `call`. `user` is the
    transcript of the caller speech that triggers it (server VAD only)."""

    transcript: str = ""
    audio: bytes = b""
    chunk: int = 800
    delay: float = 0.0
    call: Call | None = None
    user: str = ""
    status: str = "completed"


@dataclass
class Connection:
    ws: ServerConnection
    model: str
    headers: Headers
    received: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    truncations: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # function_call_output items
    items: list[dict[str, Any]] = field(default_factory=list)  # the conversation, server side
    session: dict[str, Any] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.received if event.get("type") == kind]

    async def send(self, event: dict[str, Any]) -> None:
        event = {"event_id": f"event_{next(_ids)}", **event}
        self.sent.append(event)
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(event))

    async def drop(self) -> None:
        """The socket dies without a close frame (a network failure)."""
        self.ws.transport.abort()


_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids)}"


async def stream_function_call(
    conn: Connection, base: dict[str, Any], call: Call
) -> dict[str, Any]:
    """A function call item, its arguments in two deltas, as a response's only output."""
    item = {
        "id": new_id("item"),
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "call_id": new_id("call"),
        "name": call.name,
        "arguments": "",
    }
    conn.items.append(item)
    ids = {**base, "item_id": item["id"], "output_index": 0, "call_id": item["call_id"]}
    await conn.send({"type": "response.output_item.added", **base, "output_index": 0, "item": item})
    await conn.send({"type": "conversation.item.added", "item": item})
    arguments = json.dumps(call.arguments)
    middle = len(arguments) // 2
    for part in (arguments[:middle], arguments[middle:]):
        await conn.send({"type": "response.function_call_arguments.delta", **ids, "delta": part})
    await conn.send(
        {
            "type": "response.function_call_arguments.done",
            **ids,
            "name": call.name,
            "arguments": arguments,
        }
    )
    item.update(status="completed", arguments=arguments)
    await conn.send({"type": "response.output_item.done", **base, "output_index": 0, "item": item})
    await conn.send({"type": "conversation.item.done", "item": item})
    return item


async def stream_speech(conn: Connection, base: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """A spoken message item: transcript and audio deltas interleaved, paced by `reply.delay`."""
    item: dict[str, Any] = {
        "id": new_id("item"),
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    conn.items.append(item)
    ids = {**base, "item_id": item["id"], "output_index": 0, "content_index": 0}
    await conn.send({"type": "response.output_item.added", **base, "output_index": 0, "item": item})
    await conn.send({"type": "conversation.item.added", "item": item})
    await conn.send(
        {
            "type": "response.content_part.added",
            **ids,
            "part": {"type": "audio", "transcript": ""},
        }
    )
    chunks = [reply.audio[i : i + reply.chunk] for i in range(0, len(reply.audio), reply.chunk)]
    words = reply.transcript.split(" ")
    per_chunk = max(1, -(-len(words) // max(1, len(chunks))))
    said: list[str] = []
    for index in range(max(len(chunks), 1)):
        piece = words[index * per_chunk : (index + 1) * per_chunk]
        if piece:  # transcript first, then its audio: the order varies on OpenAI too
            delta = (" " if said else "") + " ".join(piece)
            said.append(delta)
            await conn.send(
                {"type": "response.output_audio_transcript.delta", **ids, "delta": delta}
            )
        if index < len(chunks):
            audio = base64.b64encode(chunks[index]).decode()
            await conn.send({"type": "response.output_audio.delta", **ids, "delta": audio})
        if reply.delay:
            await asyncio.sleep(reply.delay)
    rest = words[len(chunks) * per_chunk :]
    if rest:
        delta = (" " if said else "") + " ".join(rest)
        await conn.send({"type": "response.output_audio_transcript.delta", **ids, "delta": delta})
    transcript = reply.transcript
    await conn.send({"type": "response.output_audio.done", **ids})
    await conn.send(
        {"type": "response.output_audio_transcript.done", **ids, "transcript": transcript}
    )
    part = {"type": "audio", "transcript": transcript}
    await conn.send({"type": "response.content_part.done", **ids, "part": part})
    item.update(status=reply.status if reply.status != "completed" else "completed")
    item["content"] = [{"type": "output_audio", "transcript": transcript}]
    await conn.send({"type": "response.output_item.done", **base, "output_index": 0, "item": item})
    await conn.send({"type": "conversation.item.done", "item": item})
    return item
