"""Twilio's side of a bidirectional Media Stream, on loopback and in real time.

The caller's microphone sends a 20 ms mu-law frame every 20 ms, silence when nobody speaks, as
Twilio does. The phone plays what the server sends at real-time pace from a buffer, echoes each
`mark` once the audio queued before it has played, and on `clear` drops the buffer and echoes
the pending marks at once (what Twilio-compatible servers report Twilio doing: the server must
not count those as played).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from tests.server.twilio_emulator import ACCOUNT, WAIT, Twilio
from voxline.audio import mulaw_encode

FRAME = 160  # bytes of mu-law per 20 ms
FRAME_SECONDS = 0.02
SILENCE = mulaw_encode(np.zeros(FRAME, np.int16))
STREAM_SID = "MZ" + "3" * 32
CALL_SID = "CA" + "1" * 32


@dataclass
class Received:
    message: dict[str, Any]
    at: float  # loop time it arrived


class MediaClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[Received] = []
        self.heard = bytearray()  # mu-law the phone played to the caller
        self.echoed: list[str] = []  # marks echoed after their audio played
        self.cleared_marks: list[str] = []  # marks echoed at once by a clear
        self.said_at: list[float] = []  # loop time each `say` began
        self.heard_at_clear = 0  # bytes heard when the (last) clear arrived
        self._sequence = 0
        self._speech: deque[bytes] = deque()
        self._playout: deque[bytes | str] = deque()  # audio frames and mark names, in order
        self._queued = asyncio.Event()
        self._spoken = asyncio.Event()
        self._deadline = 0.0  # loop time the audio being played ends
        self._tasks: list[asyncio.Task[None]] = []

    # -- set-up ----------------------------------------------------------------------------
    async def begin(self, parameters: dict[str, str], early: list[dict[str, Any]]) -> None:
        """`connected`, then the `early` messages (out of order), then `start`."""
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        for message in early:
            await self.send(message)
        await self._emit(
            "start",
            start={
                "accountSid": ACCOUNT,
                "streamSid": STREAM_SID,
                "callSid": CALL_SID,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )
        self._tasks = [
            asyncio.create_task(self._microphone()),
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._play()),
        ]

    async def end(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- caller to server ------------------------------------------------------------------
    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        await self.ws.send(message)

    async def _emit(self, event: str, **fields: Any) -> None:
        """An event as Twilio numbers it: a string sequence number and the stream SID."""
        self._sequence += 1
        await self.send(
            {"event": event, "sequenceNumber": str(self._sequence), "streamSid": STREAM_SID}
            | fields
        )

    async def say(self, mulaw: bytes) -> None:
        """Speak `mulaw` into the call, in real time; returns once the last frame is out."""
        frames = [mulaw[i : i + FRAME] for i in range(0, len(mulaw), FRAME)]
        self.said_at.append(asyncio.get_running_loop().time())
        self._speech.extend(frames)
        self._spoken.clear()
        async with asyncio.timeout(WAIT + len(frames) * FRAME_SECONDS):
            await self._spoken.wait()

    async def press(self, digit: str) -> None:
        await self._emit("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    async def stop(self) -> None:
        await self._emit("stop", stop={"accountSid": ACCOUNT, "callSid": CALL_SID})

    async def _microphone(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        chunk = 0
        while True:
            frame = self._speech.popleft() if self._speech else SILENCE
            chunk += 1
            media = {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(chunk * 20),
                "payload": base64.b64encode(frame).decode(),
            }
            await self._emit("media", media=media)
            if not self._speech:
                self._spoken.set()
            await asyncio.sleep(max(0.0, started + chunk * FRAME_SECONDS - loop.time()))

    # -- server to caller ------------------------------------------------------------------
    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        async for raw in self.ws:
            message = json.loads(raw)
            self.received.append(Received(message, loop.time()))
            event = message.get("event")
            if event == "media":
                self._playout.append(base64.b64decode(message["media"]["payload"]))
            elif event == "mark":
                self._playout.append(message["mark"]["name"])
            elif event == "clear":
                self.heard_at_clear = len(self.heard)
                pending = [item for item in self._playout if isinstance(item, str)]
                self._playout.clear()
                self._deadline = loop.time()
                for name in pending:
                    self.cleared_marks.append(name)
                    await self._echo(name)
            self._queued.set()

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._playout:
                self._queued.clear()
                await self._queued.wait()
                self._deadline = max(self._deadline, loop.time())
            item = self._playout[0]
            if isinstance(item, str):
                self._playout.popleft()
                self.echoed.append(item)
                await self._echo(item)
                continue
            self._deadline += len(item) / 8000
            await asyncio.sleep(max(0.0, self._deadline - loop.time()))
            if self._playout and self._playout[0] is item:  # not cleared while it played
                self._playout.popleft()
                self.heard.extend(item)

    async def _echo(self, name: str) -> None:
        await self._emit("mark", mark={"name": name})

    # -- what the test looks at ------------------------------------------------------------
    def events(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.message.get("event") == kind]

    async def quiet(self, seconds: float = 0.6) -> None:
        """Wait until everything sent has played and nothing new came for `seconds`."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT * 3):
            while True:
                last = self.received[-1].at if self.received else 0.0
                if not self._playout and loop.time() - last >= seconds:
                    return
                await asyncio.sleep(0.05)


def stream_of(twiml: ET.Element) -> tuple[str, dict[str, str]]:
    stream = twiml.find("./Connect/Stream")
    assert stream is not None, ET.tostring(twiml)
    return stream.attrib["url"], {p.attrib["name"]: p.attrib["value"] for p in stream}


@contextlib.asynccontextmanager
async def media_call(
    twilio: Twilio,
    twiml: ET.Element,
    *,
    signature: str | None = None,
    early: list[dict[str, Any]] | None = None,
) -> AsyncIterator[MediaClient]:
    """Open the Media Stream the TwiML names, signed as Twilio signs it, and start it."""
    url, parameters = stream_of(twiml)
    assert url.startswith(twilio.public.replace("https://", "wss://")) and "?" not in url
    local = twilio.base.replace("http://", "ws://") + url.split(".test", 1)[1]
    if signature is None:
        signature = twilio.sign(url)
    async with connect(local, additional_headers={"X-Twilio-Signature": signature}) as ws:
        client = MediaClient(ws)
        await client.begin(parameters, early or [])
        try:
            yield client
        finally:
            await client.end()
