"""Reading a server WebSocket frame by frame, the same way on every route.

Each route (Twilio's Media Streams and ConversationRelay, the browser call, the Realtime
endpoint) reads its socket until the peer goes; what counts as "gone" is decided here once: a
disconnect message, or the socket failing under the read (Starlette raises `RuntimeError` once
it is closed). Twilio's two protocols also share what a frame may be: text, and no larger than
the configured limit, since a peer sending anything else is not Twilio behaving.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

MESSAGE_TOO_BIG = 1009


async def received(websocket: WebSocket) -> AsyncGenerator[Message, None]:
    """The socket's messages (text or bytes) until the peer disconnects or the socket fails."""
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        yield message


async def twilio_text_frames(websocket: WebSocket, max_bytes: int, log: Any) -> AsyncIterator[str]:
    """The text frames of a Twilio socket. A binary frame is logged and skipped; one over
    `max_bytes` is logged, closes the socket (1009) and ends the frames."""
    async with contextlib.aclosing(received(websocket)) as messages:
        async for message in messages:
            text = message.get("text")
            if text is None:
                log.warning("binary frame ignored", size=len(message.get("bytes") or b""))
                continue
            if len(text.encode()) > max_bytes:
                log.warning("frame too large; closing", size=len(text), limit=max_bytes)
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await websocket.close(code=MESSAGE_TOO_BIG)
                return
            yield text
