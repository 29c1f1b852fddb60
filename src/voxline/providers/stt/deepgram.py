"""Deepgram streaming recognition: `deepgram:nova-3` (and other `/v1/listen` models) and
`deepgram:flux-general-en` (`/v2/listen`, Flux's conversational turn detection).

**Client: the official `deepgram-sdk`** (the `deepgram` extra). Its async socket clients stream
well: one connection per call, typed messages in order (`ListenV1Results`, `UtteranceEnd`,
`SpeechStarted`, Flux's `TurnInfo`), and the control messages as methods (`Finalize`,
`KeepAlive`, `CloseStream`, Flux's `ForceEndTurn`). What the SDK leaves to the caller —
a bounded send queue, keepalives while the channel is quiet, the close handshake with a bound,
reconnects — is `SocketStream`'s and `LiveTranscriber`'s job here, as for every provider. One
caveat, the reason this module imports the SDK only when a stream opens: its async path is
built on the `websockets.legacy` client, deprecated since websockets 14 (a DeprecationWarning
at import); should a websockets release drop it, this module is the one place to change.

Audio goes as it arrives: `encoding=mulaw&sample_rate=8000` for a phone call's µ-law (never
resampled), `linear16` at 16 kHz otherwise. Nova streams with interim results, `vad_events`
(SpeechStarted), `endpointing` (the agent's end-of-turn silence: `speech_final`) and
`utterance_end_ms` (UtteranceEnd): either of the last two is a provider end of turn. Flux
reports whole-turn transcripts and decides the turn itself (`EndOfTurn`, `EagerEndOfTurn`,
`TurnResumed`); `ForceEndTurn` is its finalize. Flux has no KeepAlive message, so its keepalive
is a short stretch of silence.

`VOXLINE_DEEPGRAM_BASE_URL` points it elsewhere (a private deployment, the tests' loopback fake):
`wss://host`, `ws://host:port` or the `https://` form.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterable
from typing import Any

from voxline.providers.llm.base import ConfigurationError
from voxline.providers.stt.base import StreamOptions, SttEvent, SttEventKind, SttStreamError
from voxline.providers.stt.streaming import Control, SocketStream, SocketSTT, refused
from voxline.settings import Settings

DEFAULT_BASE_URL = "wss://api.deepgram.com"
INSTALL_HINT = "pip install 'voxline[deepgram]'"
KEY_HINT = "set VOXLINE_DEEPGRAM_API_KEY (or DEEPGRAM_API_KEY)"
DEFAULT_ENDPOINTING = 0.3  # seconds: Nova's finals arrive soon after each pause
UTTERANCE_END_MS = 1000  # Deepgram's minimum
FLUX_EOT_TIMEOUT_MS = 3000  # Flux ends a turn after this much silence whatever it thinks
KEEPALIVE_SILENCE = 0.1  # seconds of silence Flux gets in place of a KeepAlive


class DeepgramSTT(SocketSTT):
    """A `StreamingSTT` for one Deepgram model; its `transcribe` uses a short stream."""

    provider = "deepgram"
    default_base_url = DEFAULT_BASE_URL

    def __init__(self, model: str, *, api_key: str, base_url: str | None = None) -> None:
        super().__init__(model, api_key=api_key, base_url=base_url)
        self.flux = model.startswith("flux")

    def _stream(self, options: StreamOptions) -> SocketStream:
        return _FluxStream(self, options) if self.flux else _NovaStream(self, options)

    def client(self) -> Any:
        deepgram = _sdk()
        http = "http" + self.base_url[2:]  # ws -> http, wss -> https
        environment = deepgram.DeepgramClientEnvironment(
            base=http, production=self.base_url, agent=self.base_url, agent_rest=http
        )
        return deepgram.AsyncDeepgramClient(
            api_key=self.api_key, environment=environment, reconnect=False
        )


def _sdk() -> Any:
    try:
        return importlib.import_module("deepgram")
    except ImportError:
        raise ConfigurationError(f"the Deepgram SDK is missing: {INSTALL_HINT}") from None


class _DeepgramStream(SocketStream):
    def __init__(self, stt: DeepgramSTT, options: StreamOptions) -> None:
        super().__init__(options.format, provider=stt.label)
        self.stt = stt
        self.options = options
        self._stack = contextlib.AsyncExitStack()
        self._socket: Any = None

    async def _connect(self) -> None:
        connect = self._connector()
        try:
            self._socket = await self._stack.enter_async_context(connect)
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            raise refused(self.provider, status, str(exc) or type(exc).__name__) from exc

    @abstractmethod
    def _connector(self) -> Any:
        """The SDK's connect context manager for this model family (Nova's v1, Flux's v2)."""

    async def _send_audio(self, audio: bytes) -> None:
        await self._socket.send_media(audio)

    def _messages(self) -> AsyncIterator[object]:
        return aiter(self._socket)

    async def _disconnect(self) -> None:
        await self._stack.aclose()

    def _query(self) -> dict[str, Any]:
        query: dict[str, Any] = {
            "model": self.stt.model,
            "encoding": self.format.encoding,
            "sample_rate": str(self.format.sample_rate),
        }
        if self.options.hints:
            query["keyterm"] = list(self.options.hints)
        return query


class _NovaStream(_DeepgramStream):
    def _connector(self) -> Any:
        silence = self.options.end_of_turn_silence or DEFAULT_ENDPOINTING
        query = self._query() | {
            "interim_results": "true",
            "punctuate": "true",
            "smart_format": "true",
            "vad_events": "true",
            "endpointing": str(round(silence * 1000)),
            "utterance_end_ms": str(UTTERANCE_END_MS),
        }
        if self.options.language:
            query["language"] = self.options.language
        return self.stt.client().listen.v1.connect(**query)

    async def _send_control(self, kind: Control) -> None:
        if kind == "finalize":
            await self._socket.send_finalize()
        elif kind == "keepalive":
            await self._socket.send_keep_alive()
        else:
            await self._socket.send_close_stream()

    def _parse(self, message: object) -> Iterable[SttEvent]:
        return parse_nova(message, self.provider)


class _FluxStream(_DeepgramStream):
    def _connector(self) -> Any:
        query = self._query() | {"eot_timeout_ms": FLUX_EOT_TIMEOUT_MS}
        return self.stt.client().listen.v2.connect(**query)

    async def _send_control(self, kind: Control) -> None:
        if kind == "finalize":
            await self._socket.send_force_end_turn()
        elif kind == "keepalive":
            silence = round(KEEPALIVE_SILENCE * self.format.bytes_per_second)
            await self._socket.send_media(bytes([self.format.silence_byte]) * silence)
        else:
            await self._socket.send_close_stream()

    def _parse(self, message: object) -> Iterable[SttEvent]:
        return parse_flux(message, self.provider)


def parse_nova(message: object, provider: str) -> list[SttEvent]:
    """One `/v1/listen` message (as the SDK types it) as events."""
    v1 = importlib.import_module("deepgram.listen.v1")
    if isinstance(message, v1.ListenV1Results):
        alternatives = message.channel.alternatives
        text = alternatives[0].transcript.strip() if alternatives else ""
        start, end = message.start, message.start + message.duration
        events = [
            SttEvent(
                SttEventKind.FINAL if message.is_final else SttEventKind.INTERIM, text, start, end
            )
        ]
        if message.speech_final:
            events.append(SttEvent(SttEventKind.END_OF_TURN, "", start, end))
        if message.from_finalize:
            events.append(SttEvent(SttEventKind.FINALIZED, "", start, end))
        return events
    if isinstance(message, v1.ListenV1UtteranceEnd):
        end = message.last_word_end
        return [SttEvent(SttEventKind.END_OF_TURN, "", end, end)]
    if isinstance(message, v1.ListenV1SpeechStarted):
        return [SttEvent(SttEventKind.SPEECH_STARTED, "", message.timestamp, message.timestamp)]
    if isinstance(message, v1.ListenV1Error):
        raise SttStreamError(f"{provider}: {message.description}", provider=provider)
    return []  # Metadata (the answer to CloseStream), Configure answers


def parse_flux(message: object, provider: str) -> list[SttEvent]:
    """One `/v2/listen` message (as the SDK types it) as events."""
    v2 = importlib.import_module("deepgram.listen.v2")
    if isinstance(message, v2.ListenV2TurnInfo):
        text = message.transcript.strip()
        start, end = message.audio_window_start, message.audio_window_end
        event = message.event
        if event == "EndOfTurn":
            events = [
                SttEvent(SttEventKind.FINAL, text, start, end),
                SttEvent(SttEventKind.END_OF_TURN, text, start, end),
            ]
            if message.trigger == "manual":
                events.append(SttEvent(SttEventKind.FINALIZED, "", start, end))
            return events
        events = [SttEvent(SttEventKind.INTERIM, text, start, end)]
        extra = {
            "StartOfTurn": SttEventKind.SPEECH_STARTED,
            "EagerEndOfTurn": SttEventKind.EAGER_END_OF_TURN,
            "TurnResumed": SttEventKind.TURN_RESUMED,
        }.get(str(event))
        if extra is not None:
            events.insert(
                0 if extra is SttEventKind.SPEECH_STARTED else 1, SttEvent(extra, text, start, end)
            )
        return events
    if isinstance(message, v2.ListenV2FatalError):
        raise SttStreamError(
            f"{provider}: {message.code}: {message.description}", provider=provider
        )
    return []  # Connected, Warning, Configure answers


def create_deepgram_stt(model: str | None, settings: Settings) -> DeepgramSTT:
    """`deepgram:MODEL` with the key and base URL from `settings`."""
    if not model:
        raise ConfigurationError(
            "name a Deepgram model: 'deepgram:nova-3' or 'deepgram:flux-general-en'"
        )
    if importlib.util.find_spec("deepgram") is None:
        raise ConfigurationError(f"the Deepgram SDK is missing: {INSTALL_HINT}")
    key = settings.deepgram_api_key
    if key is None:
        raise ConfigurationError(f"deepgram:{model} needs an API key: {KEY_HINT}")
    return DeepgramSTT(model, api_key=key.get_secret_value(), base_url=settings.deepgram_base_url)
