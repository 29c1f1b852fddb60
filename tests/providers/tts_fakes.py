"""Loopback fakes of the hosted voices' wire protocols: ElevenLabs' stream-input WebSocket,
Cartesia's TTS WebSocket with contexts, OpenAI's speech endpoint.

Message shapes follow the providers' API references and their official SDKs' models
(`elevenlabs.types.AudioOutput` / `FinalOutput` / `InitializeConnection` / `SendText` /
`CloseConnection`; `cartesia.types.websocket_response` and `CancelContextRequest`;
`openai.resources.audio.speech`); test_tts_fakes.py drives the official SDK clients against
these fakes, so a fake that drifts from what an SDK sends or reads fails there.

Audio is deterministic noise keyed on the text (µ-law bytes cover all 256 codes, 0x7F
included), `seconds_per_char` long, sent in `chunk_seconds` pieces `pace` seconds apart, so a
test can hold a sentence open long enough to barge in on it. `Behaviour` injects failures: a
refused handshake, the provider's own error message, a socket or body dropped after some audio
messages (no close frame, as when a network path dies), or silence.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import ssl
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

API_KEY = "test-voice-key"
SECONDS_PER_CHAR = 0.02


@dataclass
class Behaviour:
    """How a fake answers. `drop_after`: abort the connection after that many audio messages
    (counted per sentence); `error`: answer with the provider's error instead of audio;
    `refuse`: refuse the handshake or request with that HTTP status; `silent`: never answer."""

    def drops_now(self, index: int) -> bool:
        """Whether the sentence on its `index`th audio message is to be dropped now (and if so,
        one drop is used up)."""
        if self.drop_after is None or index < self.drop_after or self.drop_times == 0:
            return False
        if self.drop_times is not None:
            self.drop_times -= 1
        return True

    pace: float = 0.0
    chunk_seconds: float = 0.05
    seconds_per_char: float = SECONDS_PER_CHAR
    drop_after: int | None = None
    drop_times: int | None = None  # how many sentences drop (None: every one that is long enough)
    error: str | None = None
    refuse: int | None = None
    silent: bool = False


def fake_audio(text: str, *, mulaw: bool, rate: int, seconds_per_char: float) -> bytes:
    """The audio a fake speaks for `text`: µ-law bytes, or little-endian PCM16."""
    samples = max(1, round(len(text) * seconds_per_char * rate))
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    if mulaw:
        return rng.integers(0, 256, samples, dtype=np.uint8).tobytes()
    return rng.integers(-3000, 3000, samples, dtype=np.int16).astype("<i2").tobytes()


def pieces(audio: bytes, text: str, size: int) -> list[tuple[bytes, str]]:
    """`audio` cut into `size`-byte messages, each with the characters of `text` it speaks."""
    cuts = list(range(0, len(audio), max(1, size)))
    out: list[tuple[bytes, str]] = []
    for index, start in enumerate(cuts):
        first = len(text) * index // len(cuts)
        last = len(text) * (index + 1) // len(cuts)
        out.append((audio[start : start + size], text[first:last]))
    return out


def _format(rate_of: str) -> tuple[bool, int] | None:
    """(µ-law, rate) of an ElevenLabs `output_format`, or None for one the fake cannot make."""
    match = re.fullmatch(r"(ulaw|pcm)_(\d+)", rate_of)
    if match is None:
        return None
    return match.group(1) == "ulaw", int(match.group(2))


def _abort(ws: ServerConnection) -> None:
    """Drop the TCP connection with no close frame (the client sees 1006)."""
    ws.transport.abort()


class _SocketFake:
    """A WebSocket server on a loopback port (TLS when given a context)."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._server: Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"{'wss' if self._tls else 'ws'}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Any:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._check,
            ssl=self._tls,
            max_size=None,
            compression=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        raise NotImplementedError

    async def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError


# -- ElevenLabs ------------------------------------------------------------------------------


@dataclass
class ElevenLabsStream:
    """One stream-input socket as the fake saw it."""

    voice: str
    query: dict[str, str]
    headers: Headers
    messages: list[dict[str, Any]] = field(default_factory=list)  # what the client sent
    audio: bytearray = field(default_factory=bytearray)  # what the fake sent, decoded
    final: bool = False  # isFinal was sent
    closed_early: bool = False  # the client closed the socket before isFinal
    close_code: int | None = None  # of the client's close frame (None: no close frame came)

    @property
    def text(self) -> str:
        return "".join(str(m.get("text", "")) for m in self.messages)


class FakeElevenLabs(_SocketFake):
    """`/v1/text-to-speech/{voice_id}/stream-input`: `{"text": " "}` opens, text follows,
    `{"text": ""}` ends the input; audio comes back as `{"audio", "alignment", ...}` messages,
    then `{"isFinal": true}`, then a normal close."""

    PATH = re.compile(r"^/v1/text-to-speech/([^/?]+)/stream-input$")

    def __init__(self, behaviour: Behaviour | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.behaviour = behaviour or Behaviour()
        self.streams: list[ElevenLabsStream] = []

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.PATH.match(urlsplit(request.path).path) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if request.headers.get("xi-api-key") != API_KEY:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid api key\n")
        if self.behaviour.refuse is not None:
            return connection.respond(HTTPStatus(self.behaviour.refuse), "refused\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request else "")
        match = self.PATH.match(url.path)
        assert match is not None and ws.request is not None
        stream = ElevenLabsStream(match.group(1), dict(parse_qsl(url.query)), ws.request.headers)
        self.streams.append(stream)
        behaviour = self.behaviour
        try:
            async for raw in ws:
                message = json.loads(raw)
                stream.messages.append(message)
                if message.get("text") == "":
                    break
            if behaviour.silent:
                await ws.wait_closed()
                return
            fmt = _format(stream.query.get("output_format", "mp3_44100_128"))
            if behaviour.error or fmt is None:
                detail = behaviour.error or "unsupported output_format"
                await ws.send(
                    json.dumps({"message": detail, "error": "invalid_request", "code": 1008})
                )
                await ws.close(1008, detail)
                return
            mulaw, rate = fmt
            text = stream.text.strip()
            audio = fake_audio(
                text, mulaw=mulaw, rate=rate, seconds_per_char=behaviour.seconds_per_char
            )
            size = round(behaviour.chunk_seconds * rate) * (1 if mulaw else 2)
            for index, (piece, said) in enumerate(pieces(audio, text, size)):
                if behaviour.drops_now(index):
                    _abort(ws)
                    return
                await ws.send(json.dumps(audio_output(piece, said)))
                stream.audio.extend(piece)
                if behaviour.pace:
                    await asyncio.sleep(behaviour.pace)
            await ws.send(json.dumps({"isFinal": True}))
            stream.final = True
            await ws.close()
        except ConnectionClosed as exc:
            stream.closed_early = not stream.final
            stream.close_code = exc.rcvd.code if exc.rcvd is not None else None


def audio_output(audio: bytes, said: str) -> dict[str, Any]:
    """An `AudioOutput` message: base64 audio plus per-character alignment of the text."""
    starts = [10 * i for i in range(len(said))]
    alignment = {
        "chars": list(said),
        "charStartTimesMs": starts,
        "charDurationsMs": [10] * len(said),
    }
    return {
        "audio": base64.b64encode(audio).decode(),
        "normalizedAlignment": alignment,
        "alignment": alignment,
    }


# -- Cartesia --------------------------------------------------------------------------------


@dataclass
class CartesiaContext:
    context_id: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    cancelled: bool = False
    done: bool = False

    @property
    def transcript(self) -> str:
        return "".join(str(r.get("transcript", "")) for r in self.requests)


class FakeCartesia(_SocketFake):
    """`/tts/websocket`: generation requests per `context_id` (`"continue": true` while text
    streams in; `"continue": false` or `"flush": true` starts the audio), `{"context_id",
    "cancel": true}` stops a context; the answers are `chunk`, `timestamps`, `done`, `error`."""

    PATH = "/tts/websocket"

    def __init__(self, behaviour: Behaviour | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.behaviour = behaviour or Behaviour()
        self.contexts: dict[str, CartesiaContext] = {}
        self.cancels: list[str] = []  # context ids, in the order their cancel arrived
        self.connections: list[Headers] = []

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != self.PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid api key\n")
        if not request.headers.get("Cartesia-Version"):
            return connection.respond(HTTPStatus.BAD_REQUEST, "Cartesia-Version is required\n")
        if self.behaviour.refuse is not None:
            return connection.respond(HTTPStatus(self.behaviour.refuse), "refused\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.connections.append(ws.request.headers)
        running: dict[str, asyncio.Task[None]] = {}
        try:
            async for raw in ws:
                message = json.loads(raw)
                context_id = str(message["context_id"])
                context = self.contexts.setdefault(context_id, CartesiaContext(context_id))
                if message.get("cancel"):
                    context.cancelled = True
                    self.cancels.append(context_id)
                    task = running.pop(context_id, None)
                    if task is not None:
                        task.cancel()
                    continue
                context.requests.append(message)
                ends = message.get("continue") is False or message.get("flush")
                if ends and not self.behaviour.silent and context_id not in running:
                    running[context_id] = asyncio.create_task(self._speak(ws, context, message))
        except ConnectionClosed:
            pass
        finally:
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)

    async def _speak(
        self, ws: ServerConnection, context: CartesiaContext, last: dict[str, Any]
    ) -> None:
        behaviour = self.behaviour
        cid = context.context_id
        if behaviour.error:
            await ws.send(json.dumps(_cartesia_error(cid, behaviour.error)))
            return
        fmt = context.requests[0]["output_format"]
        mulaw = fmt["encoding"] == "pcm_mulaw"
        rate = int(fmt["sample_rate"])
        text = context.transcript.strip()
        audio = fake_audio(
            text, mulaw=mulaw, rate=rate, seconds_per_char=behaviour.seconds_per_char
        )
        size = round(behaviour.chunk_seconds * rate) * (1 if mulaw else 2)
        words = _word_times(text, len(audio) / (rate if mulaw else 2 * rate))
        seconds = 0.0
        with contextlib.suppress(ConnectionClosed):
            for index, (piece, _) in enumerate(pieces(audio, text, size)):
                if behaviour.drops_now(index):
                    _abort(ws)
                    return
                data = base64.b64encode(piece).decode()
                chunk = {"type": "chunk", "context_id": cid, "data": data, "done": False}
                await ws.send(json.dumps(chunk | {"status_code": 206, "step_time": 1.0}))
                context.audio.extend(piece)
                seconds += len(piece) / (rate if mulaw else 2 * rate)
                ended = [w for w in words if w[2] <= seconds + 1e-9]
                words = words[len(ended) :]
                if ended and context.requests[0].get("add_timestamps"):
                    await ws.send(json.dumps(_timestamps(cid, ended)))
                if behaviour.pace:
                    await asyncio.sleep(behaviour.pace)
            context.done = True
            await ws.send(
                json.dumps({"type": "done", "context_id": cid, "done": True, "status_code": 206})
            )


def _word_times(text: str, duration: float) -> list[tuple[str, float, float]]:
    """Each word of `text` with its start and end, characters spread evenly over `duration`."""
    per_char = duration / max(1, len(text))
    return [
        (m.group(), m.start() * per_char, m.end() * per_char) for m in re.finditer(r"\S+", text)
    ]


def _timestamps(context_id: str, words: list[tuple[str, float, float]]) -> dict[str, Any]:
    """A `timestamps` message for `words` (sent once the audio that speaks them has gone)."""
    return {
        "type": "timestamps",
        "context_id": context_id,
        "done": False,
        "status_code": 206,
        "word_timestamps": {
            "words": [word for word, _, _ in words],
            "start": [start for _, start, _ in words],
            "end": [end for _, _, end in words],
        },
    }


def _cartesia_error(context_id: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "context_id": context_id,
        "done": True,
        "status_code": 400,
        "title": "Invalid request",
        "message": message,
        "error_code": "invalid_request",
    }


# -- OpenAI ----------------------------------------------------------------------------------


@dataclass
class SpeechRequest:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]  # the JSON of a speech request
    raw: bytes = b""  # the body as it came
    audio: bytearray = field(default_factory=bytearray)  # what the fake sent back
    complete: bool = False  # the whole body went out


class FakeOpenAISpeech:
    """`POST /v1/audio/speech` with `response_format: "pcm"`: 24 kHz PCM16 in a chunked body,
    or OpenAI's JSON error (`{"error": {"message", "type", "code"}}`).

    `others`, an ASGI app, answers every other path: OpenAI's speech and transcription
    endpoints share one base URL (and one `VOXLINE_OPENAI_BASE_URL`), so a call that both
    listens and speaks through OpenAI needs them on one server (the transcription fake of
    stt_fakes.py is such an app)."""

    RATE = 24000

    def __init__(self, behaviour: Behaviour | None = None, *, others: Any = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.requests: list[SpeechRequest] = []
        self._others = others
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeOpenAISpeech:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is not None and request.path != "/v1/audio/speech" and self._others:
                await self._forward(request, writer)
            elif request is not None:
                request.body = json.loads(request.raw) if request.raw else {}
                self.requests.append(request)
                await self._answer(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away (a barge-in closes the response)
        finally:
            if not writer.transport.is_closing():
                writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _forward(self, request: SpeechRequest, writer: asyncio.StreamWriter) -> None:
        """Another endpoint's request, answered by `others` as it is (body and headers)."""
        transport = httpx.ASGITransport(app=self._others)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
            headers = {k: v for k, v in request.headers.items() if k != "host"}
            answer = await client.post(request.path, content=request.raw, headers=headers)
        head = f"HTTP/1.1 {answer.status_code} {answer.reason_phrase}\r\n"
        head += f"content-type: {answer.headers.get('content-type', 'application/json')}\r\n"
        head += f"content-length: {len(answer.content)}\r\nconnection: close\r\n\r\n"
        writer.write(head.encode() + answer.content)
        await writer.drain()

    async def _answer(
        self, request: SpeechRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        behaviour = self.behaviour
        if request.path != "/v1/audio/speech":
            return await _json(writer, 404, _openai_error("no such endpoint"))
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return await _json(writer, 401, _openai_error("Incorrect API key provided"))
        if behaviour.refuse is not None or behaviour.error:
            status = behaviour.refuse or 400
            return await _json(writer, status, _openai_error(behaviour.error or "refused"))
        if request.body.get("response_format") != "pcm":
            return await _json(writer, 400, _openai_error("this fake speaks pcm only"))
        if behaviour.silent:
            await reader.read()  # until the client gives up
            return
        text = str(request.body["input"])
        audio = fake_audio(
            text, mulaw=False, rate=self.RATE, seconds_per_char=behaviour.seconds_per_char
        )
        head = "HTTP/1.1 200 OK\r\ncontent-type: audio/pcm\r\ntransfer-encoding: chunked\r\n"
        writer.write((head + "connection: close\r\n\r\n").encode())
        size = round(behaviour.chunk_seconds * self.RATE) * 2 + 1  # odd: reads split samples
        for index, (piece, _) in enumerate(pieces(audio, text, size)):
            if behaviour.drops_now(index):
                writer.transport.abort()
                return
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            request.audio.extend(piece)
            if behaviour.pace:
                await asyncio.sleep(behaviour.pace)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        request.complete = True


async def _read_request(reader: asyncio.StreamReader) -> SpeechRequest | None:
    line = await reader.readline()
    if not line:
        return None
    _, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    raw = await reader.readexactly(length) if length else b""
    return SpeechRequest(path, headers, {}, raw)


def _openai_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


async def _json(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    reason = HTTPStatus(status).phrase
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
    head += f"content-length: {len(data)}\r\nconnection: close\r\n\r\n"
    writer.write(head.encode() + data)
    await writer.drain()
