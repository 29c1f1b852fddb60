"""Loopback stand-ins for the hosted recognizers, speaking their documented wire protocols.

Each fake hears "speech" by loudness and says what was said from a script keyed on the
speech's level (`phrases`: amplitude -> words, the nearest level wins), so a caller is scripted
by the amplitude of the audio it sends, and the same audio heard again on a new connection (a
re-send after a drop) is the same words. Every 20 ms of audio louder than `SPEECH_RMS` is
speech; a word is revealed every `WORD_SECONDS` of it (interim results), and each provider's
own endpointing rule ends the utterance:

- `FakeDeepgram`, `/v1/listen` (Nova): `Results` (interim, then `is_final` with `speech_final`
  after `endpointing` ms of silence), `SpeechStarted` (`vad_events`), `UtteranceEnd` after
  `utterance_end_ms`; `Finalize` answers with `from_finalize: true` (unless
  `answer_finalize=False`), `KeepAlive` is noted, `CloseStream` flushes, sends `Metadata` and
  closes (1000). `/v2/listen` (Flux): `Connected`, `TurnInfo` events `StartOfTurn`, `Update`,
  `EagerEndOfTurn`/`TurnResumed` (with `eager_eot_threshold`), `EndOfTurn` (trigger `model`
  after `FLUX_EOT_SILENCE`, `manual` for `ForceEndTurn`); `CloseStream` closes.
- `FakeAssemblyAI`, `/v3/ws`: `Begin`, `Turn` messages (`words` with `word_is_final`,
  `transcript` of the final words, `end_of_turn` after `min_turn_silence` ms, default 400),
  `ForceEndpoint`, `KeepAlive`, `Terminate` -> the last `Turn`, `Termination`, close (1000).
  Audio messages outside 50-1000 ms close the socket with 3007, as the service does.
- `FakeOpenAI`: `POST /v1/audio/transcriptions` (multipart WAV) -> `{"text": ...}`.

A wrong key is refused at the handshake (401). `drops` makes connection N die without a close
frame after that many seconds of audio; `errors` makes it send the provider's error message
instead. Each connection keeps what it received (`audio`, `controls`) and sent (`sent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voxline.audio import mulaw_decode, mulaw_encode, read_wav

SPEECH_RMS = 500.0
WINDOW = 0.02  # seconds of audio judged at a time
WORD_SECONDS = 0.15  # speech per revealed word
FLUX_EOT_SILENCE = 0.5
FLUX_EAGER_SILENCE = 0.25
DEFAULT_PHRASE = "hello there"
_ids = itertools.count(1)


def nearest(phrases: dict[int, str], level: float) -> str:
    if not phrases:
        return DEFAULT_PHRASE
    return phrases[min(phrases, key=lambda amplitude: abs(amplitude - level))]


@dataclass
class Utterance:
    words: list[str]
    start: float
    end: float  # where the last speech window ended
    revealed: int = 0
    finalized: int = 0  # words already sent as final (Nova)
    done: bool = False
    finished: bool = False  # Nova: all its words went out as final; new speech is a new one
    eager: bool = False  # Flux: EagerEndOfTurn sent and not resumed


class Ears:
    """Speech by loudness on one connection's audio; utterances with scripted words."""

    def __init__(self, phrases: dict[int, str], encoding: str, rate: int) -> None:
        self.phrases = phrases
        self.encoding = encoding
        self.rate = rate
        self.t = 0.0  # seconds heard
        self.current: Utterance | None = None
        self._rest = b""

    def decode(self, data: bytes) -> npt.NDArray[np.int16]:
        if self.encoding in ("mulaw", "pcm_mulaw"):
            return mulaw_decode(data)
        return np.frombuffer(data, dtype="<i2").astype(np.int16)

    def feed(self, data: bytes) -> list[tuple[str, Utterance, float]]:
        """Events: ("start" | "grow" | "silence", utterance, silence so far)."""
        width = 1 if self.encoding in ("mulaw", "pcm_mulaw") else 2
        data = self._rest + data
        step = round(WINDOW * self.rate) * width
        events: list[tuple[str, Utterance, float]] = []
        while len(data) >= step:
            window, data = data[:step], data[step:]
            pcm = self.decode(window).astype(np.float64)
            self.t += WINDOW
            loud = float(np.sqrt(np.mean(pcm**2))) > SPEECH_RMS
            utterance = self.current
            if loud:
                if utterance is None or utterance.done or utterance.finished:
                    level = float(np.abs(pcm).max())
                    words = nearest(self.phrases, level).split()
                    utterance = self.current = Utterance(words, self.t - WINDOW, self.t)
                    events.append(("start", utterance, 0.0))
                utterance.end = self.t
                due = min(
                    len(utterance.words), int((utterance.end - utterance.start) / WORD_SECONDS)
                )
                if due > utterance.revealed:
                    utterance.revealed = due
                    events.append(("grow", utterance, 0.0))
            elif utterance is not None and not utterance.done:
                events.append(("silence", utterance, self.t - utterance.end))
        self._rest = data
        return events


@dataclass
class Connection:
    ws: ServerConnection
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    audio: bytearray = field(default_factory=bytearray)
    chunks: list[int] = field(default_factory=list)  # sizes of the audio messages
    controls: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [message for message in self.controls if message.get("type") == kind]

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(message))

    def drop(self) -> None:
        """The socket dies without a close frame (a network failure)."""
        self.ws.transport.abort()


class FakeSocketServer:
    """`async with Fake(...) as server:` then point the provider at `server.url`."""

    paths: tuple[str, ...] = ()
    auth_scheme = ""

    def __init__(
        self,
        phrases: dict[int, str] | None = None,
        *,
        api_key: str = "test-key",
        drops: dict[int, float] | None = None,
        errors: dict[int, float] | None = None,
        refuse: int | None = None,
    ) -> None:
        self.phrases = phrases or {}
        self.api_key = api_key
        self.drops = drops or {}
        self.errors = errors or {}
        self.refuse = refuse
        self.connections: list[Connection] = []
        self.attempts = 0
        self._server: Server | None = None
        self._port = 0

    async def __aenter__(self) -> FakeSocketServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._check)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}"

    async def connection(self, index: int = 0) -> Connection:
        async with asyncio.timeout(10.0):
            while len(self.connections) <= index:  # noqa: ASYNC110 (polling a test fixture)
                await asyncio.sleep(0.01)
        return self.connections[index]

    def _check(self, ws: ServerConnection, request: Request) -> Response | None:
        self.attempts += 1
        if urlsplit(request.path).path not in self.paths:
            return ws.respond(404, "no such endpoint\n")
        expected = f"{self.auth_scheme}{self.api_key}"
        if request.headers.get("Authorization") != expected:
            return ws.respond(401, "bad key\n")
        if self.refuse is not None:
            return ws.respond(self.refuse, "refused\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        conn = Connection(ws, parts.path, query, dict(ws.request.headers.raw_items()))
        index = len(self.connections)
        self.connections.append(conn)
        with contextlib.suppress(ConnectionClosed):
            await self.session(conn, index)

    async def session(self, conn: Connection, index: int) -> None:
        raise NotImplementedError

    def _audio_limit(self, index: int) -> tuple[float | None, float | None]:
        return self.drops.get(index), self.errors.get(index)


def _words(utterance: Utterance, upto: int) -> list[dict[str, Any]]:
    spread = (utterance.end - utterance.start) / max(1, len(utterance.words))
    return [
        {
            "word": word,
            "start": round(utterance.start + i * spread, 3),
            "end": round(utterance.start + (i + 1) * spread, 3),
            "confidence": 0.99,
            "punctuated_word": word,
        }
        for i, word in enumerate(utterance.words[:upto])
    ]


class FakeDeepgram(FakeSocketServer):
    paths = ("/v1/listen", "/v2/listen")
    auth_scheme = "Token "

    def __init__(self, *args: Any, answer_finalize: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer_finalize = answer_finalize

    async def session(self, conn: Connection, index: int) -> None:
        if conn.path == "/v2/listen":
            await _FluxSession(self, conn, index).run()
        else:
            await _NovaSession(self, conn, index).run()


class _Session:
    def __init__(self, server: FakeSocketServer, conn: Connection, index: int) -> None:
        self.server = server
        self.conn = conn
        self.q = conn.query
        encoding = self.q.get("encoding", "linear16")
        self.ears = Ears(server.phrases, encoding, int(self.q.get("sample_rate", "16000")))
        self.drop_at, self.error_at = server._audio_limit(index)
        self.request_id = f"req-{next(_ids)}"

    async def run(self) -> None:
        await self.opened()
        async for message in self.conn.ws:
            if isinstance(message, bytes):
                self.conn.audio.extend(message)
                self.conn.chunks.append(len(message))
                if self.drop_at is not None and self.ears.t >= self.drop_at:
                    self.conn.drop()
                    return
                if self.error_at is not None and self.ears.t >= self.error_at:
                    await self.error()
                    return
                if not await self.check_chunk(message):
                    return
                for kind, utterance, silence in self.ears.feed(message):
                    await self.heard(kind, utterance, silence)
            else:
                control = json.loads(message)
                self.conn.controls.append(control)
                if await self.control(control):
                    return

    async def opened(self) -> None: ...

    async def check_chunk(self, message: bytes) -> bool:
        return True

    async def heard(self, kind: str, utterance: Utterance, silence: float) -> None: ...

    async def control(self, message: dict[str, Any]) -> bool:
        """True: the session is over."""
        return False

    async def error(self) -> None: ...


class _NovaSession(_Session):
    def _results(self, utterance: Utterance, upto: int, **flags: bool) -> dict[str, Any]:
        words = _words(utterance, upto)[utterance.finalized :]
        start = words[0]["start"] if words else utterance.end
        end = words[-1]["end"] if words else utterance.end
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - start, 3),
            "start": start,
            "is_final": flags.get("is_final", False),
            "speech_final": flags.get("speech_final", False),
            "from_finalize": flags.get("from_finalize", False),
            "channel": {
                "alternatives": [
                    {
                        "transcript": " ".join(w["word"] for w in words),
                        "confidence": 0.99,
                        "words": words,
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "fake", "version": "1", "arch": "fake"},
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }

    async def heard(self, kind: str, utterance: Utterance, silence: float) -> None:
        if kind == "start" and self.q.get("vad_events") == "true":
            await self.conn.send(
                {"type": "SpeechStarted", "channel": [0], "timestamp": utterance.start}
            )
        elif kind == "grow" and self.q.get("interim_results") == "true":
            await self.conn.send(self._results(utterance, utterance.revealed))
        elif kind == "silence":
            endpointing = float(self.q.get("endpointing", "10")) / 1000
            if silence >= endpointing and utterance.finalized < len(utterance.words):
                await self._final(utterance, speech_final=True)
            limit = self.q.get("utterance_end_ms")
            if limit is not None and silence >= float(limit) / 1000 and not utterance.done:
                utterance.done = True
                await self.conn.send(
                    {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": utterance.end}
                )
            elif limit is None and utterance.finalized >= len(utterance.words):
                utterance.done = True

    async def _final(self, utterance: Utterance, **flags: bool) -> None:
        utterance.revealed = len(utterance.words)
        message = self._results(utterance, len(utterance.words), is_final=True, **flags)
        utterance.finalized = len(utterance.words)
        utterance.finished = True
        await self.conn.send(message)

    async def control(self, message: dict[str, Any]) -> bool:
        kind = message.get("type")
        current = self.ears.current
        pending = current is not None and current.finalized < len(current.words)
        if kind == "Finalize" and self.server.answer_finalize:  # type: ignore[attr-defined]
            if pending and current is not None:
                await self._final(current, from_finalize=True)
            else:
                empty = Utterance([], self.ears.t, self.ears.t)
                await self.conn.send(self._results(empty, 0, is_final=True, from_finalize=True))
        elif kind == "CloseStream":
            if pending and current is not None:
                await self._final(current)
            await self.conn.send(
                {
                    "type": "Metadata",
                    "transaction_key": "deprecated",
                    "request_id": self.request_id,
                    "sha256": "0" * 64,
                    "created": "2026-01-01T00:00:00.000Z",
                    "duration": round(self.ears.t, 3),
                    "channels": 1,
                }
            )
            await self.conn.ws.close()
            return True
        return False

    async def error(self) -> None:
        await self.conn.send(
            {"type": "Error", "variant": "InternalError", "description": "the fake broke"}
        )
        await self.conn.ws.close(1011, "fake error")


class _FluxSession(_Session):
    turn = 0
    sequence = 0

    async def opened(self) -> None:
        await self._send({"type": "Connected", "request_id": self.request_id})

    async def _send(self, message: dict[str, Any]) -> None:
        await self.conn.send(message | {"sequence_id": self.sequence})
        self.sequence += 1

    async def _turn(self, event: str, utterance: Utterance, upto: int, **extra: Any) -> None:
        words = _words(utterance, upto)
        await self._send(
            {
                "type": "TurnInfo",
                "request_id": self.request_id,
                "event": event,
                "turn_index": self.turn,
                "audio_window_start": utterance.start,
                "audio_window_end": self.ears.t,
                "transcript": " ".join(w["word"] for w in words),
                "words": [{"word": w["word"], "confidence": w["confidence"]} for w in words],
                "end_of_turn_confidence": 0.9 if event.endswith("EndOfTurn") else 0.1,
            }
            | extra
        )

    async def heard(self, kind: str, utterance: Utterance, silence: float) -> None:
        if kind == "start":
            await self._turn("StartOfTurn", utterance, 0)
        elif kind == "grow":
            if utterance.eager:
                utterance.eager = False
                await self._turn("TurnResumed", utterance, utterance.revealed)
            await self._turn("Update", utterance, utterance.revealed)
        elif kind == "silence":
            eager = "eager_eot_threshold" in self.q and not utterance.done
            if eager and not utterance.eager and silence >= FLUX_EAGER_SILENCE:
                utterance.eager = True
                utterance.revealed = len(utterance.words)
                await self._turn("EagerEndOfTurn", utterance, len(utterance.words))
            if silence >= FLUX_EOT_SILENCE and not utterance.done:
                await self._end(utterance, "model")

    async def _end(self, utterance: Utterance, trigger: str) -> None:
        utterance.done = True
        await self._turn("EndOfTurn", utterance, len(utterance.words), trigger=trigger)
        self.turn += 1

    async def control(self, message: dict[str, Any]) -> bool:
        kind = message.get("type")
        current = self.ears.current
        if kind == "ForceEndTurn" and current is not None and not current.done:
            await self._end(current, "manual")
        elif kind == "CloseStream":
            if current is not None and not current.done:
                await self._turn("Update", current, current.revealed)
            await self.conn.ws.close()
            return True
        return False

    async def error(self) -> None:
        await self._send(
            {"type": "Error", "code": "INTERNAL_SERVER_ERROR", "description": "the fake broke"}
        )
        await self.conn.ws.close(1011, "fake error")


class FakeAssemblyAI(FakeSocketServer):
    paths = ("/v3/ws",)

    async def session(self, conn: Connection, index: int) -> None:
        await _AssemblySession(self, conn, index).run()


class _AssemblySession(_Session):
    turn = 0
    started = 0.0

    async def opened(self) -> None:
        self.started = time.monotonic()
        await self.conn.send(
            {"type": "Begin", "id": self.request_id, "expires_at": int(time.time()) + 3600}
        )

    async def check_chunk(self, message: bytes) -> bool:
        width = 1 if self.q.get("encoding") == "pcm_mulaw" else 2
        seconds = len(message) / width / int(self.q.get("sample_rate", "16000"))
        if 0.05 - 1e-9 <= seconds <= 1.0:
            return True
        await self.conn.ws.close(3007, "Input duration violation")
        return False

    def _turn_message(self, utterance: Utterance, end: bool) -> dict[str, Any]:
        upto = len(utterance.words) if end else utterance.revealed
        words = [
            {
                "start": round(w["start"] * 1000),
                "end": round(w["end"] * 1000),
                "text": w["word"],
                "confidence": 0.99,
                "word_is_final": end or i < upto - 1,
            }
            for i, w in enumerate(_words(utterance, upto))
        ]
        final = [w["text"] for w in words if w["word_is_final"]]
        return {
            "type": "Turn",
            "turn_order": self.turn,
            "turn_is_formatted": False,
            "end_of_turn": end,
            "transcript": " ".join(final),
            "end_of_turn_confidence": 0.9 if end else 0.1,
            "words": words,
            "utterance": " ".join(final) if end else "",
        }

    async def heard(self, kind: str, utterance: Utterance, silence: float) -> None:
        if kind == "grow":
            await self.conn.send(self._turn_message(utterance, end=False))
        elif kind == "silence":
            limit = float(self.q.get("min_turn_silence", "400")) / 1000
            if silence >= limit and not utterance.done:
                await self._end(utterance)

    async def _end(self, utterance: Utterance) -> None:
        utterance.done = True
        await self.conn.send(self._turn_message(utterance, end=True))
        self.turn += 1

    async def control(self, message: dict[str, Any]) -> bool:
        kind = message.get("type")
        current = self.ears.current
        open_turn = current is not None and not current.done
        if kind == "ForceEndpoint" and open_turn and current is not None:
            await self._end(current)
        elif kind == "Terminate":
            if open_turn and current is not None:
                await self._end(current)
            await self.conn.send(
                {
                    "type": "Termination",
                    "audio_duration_seconds": int(self.ears.t),
                    "session_duration_seconds": int(time.monotonic() - self.started),
                }
            )
            await self.conn.ws.close()
            return True
        return False

    async def error(self) -> None:
        await self.conn.send({"type": "Error", "error": "the fake broke"})
        await self.conn.ws.close(3005, "Server error")


@dataclass
class FakeOpenAI:
    """OpenAI's transcription endpoint; run it with `tests.server.twilio_emulator.running`."""

    phrases: dict[int, str] = field(default_factory=dict)
    api_key: str = "test-key"
    fail: int | None = None  # answer every request with this status
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def transcriptions(request: HttpRequest) -> JSONResponse:
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
            form = await request.form()
            upload = form["file"]
            assert not isinstance(upload, str)
            audio = read_wav(io.BytesIO(await upload.read()))
            fields = {k: str(v) for k, v in form.items() if k != "file"}
            self.requests.append(fields | {"seconds": len(audio.pcm) / audio.sample_rate})
            if self.fail is not None:
                return JSONResponse({"error": {"message": "fake failure"}}, status_code=self.fail)
            pcm = audio.pcm.astype(np.float64)
            loud = pcm.size and float(np.sqrt(np.mean(pcm**2))) > SPEECH_RMS
            text = nearest(self.phrases, float(np.abs(pcm).max())) if loud else ""
            return JSONResponse({"text": text})

        return Starlette(
            routes=[Route("/v1/audio/transcriptions", transcriptions, methods=["POST"])]
        )


# -- what the tests send ------------------------------------------------------------------
def tone(amplitude: int, seconds: float, rate: int = 16000) -> npt.NDArray[np.int16]:
    """A "caller" at `amplitude` (0: silence); the fakes' words are keyed on it."""
    return np.full(round(seconds * rate), amplitude, dtype=np.int16)


def mulaw_tone(amplitude: int, seconds: float) -> bytes:
    return mulaw_encode(tone(amplitude, seconds, 8000))


def frames(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def wait_for(check: Callable[[], object]) -> None:
    async with asyncio.timeout(10.0):
        while not check():  # noqa: ASYNC110 (polling a test fixture)
            await asyncio.sleep(0.01)
