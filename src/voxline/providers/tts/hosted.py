"""What the hosted voices (ElevenLabs, Cartesia, OpenAI) share: decoding their audio exactly,
re-cutting it into chunks that say which words they speak, and their timeouts.

Why each piece is here:

- **µ-law without loss.** On the phone a hosted voice is asked for 8 kHz µ-law, Twilio's own
  format, so no resampling happens anywhere. The pipeline carries PCM16, and the Media Streams
  transport encodes it back to µ-law; G.711 decoding followed by encoding gives back every byte
  except 0x7F (negative zero), which the standard table decodes to 0 and the encoder writes as
  0xFF. `exact_mulaw_decode` decodes 0x7F to -1 instead (one step of the smallest segment,
  inaudible), which the encoder maps back to 0x7F: the phone receives the provider's bytes.
- **Words per chunk.** The speaker maps playback position back to text through each chunk's
  `text`, and a fallback chain resumes a sentence after the words already spoken. Providers
  stream audio in pieces that do not say what they speak (OpenAI), or say it in their own terms
  (ElevenLabs character alignment, Cartesia word timestamps). `Utterance` credits whole words to
  each chunk from the provider's progress when it reports one, else from an estimated speaking
  rate, never the last word before the end; and it holds back the last few milliseconds of
  audio, so the final chunk (sent when the provider says it is done) carries the rest of the
  text. Holding back costs no latency: it is audio that plays after what was just sent.
- **Rates.** When a provider cannot synthesise at the channel's rate, `Utterance` resamples
  with one stream resampler per sentence, so chunk edges do not click.
- **The WebSocket voices' common ground.** ElevenLabs and Cartesia are configured alike (a voice
  id, a model, a key, a base URL, two timeouts: `SocketVoice`) and connect alike (`open_socket`:
  a refused handshake or an unreachable host is a `TTSError` naming the voice, counted as a
  provider failure), so both live here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from voxline.audio.codecs import mulaw_decode
from voxline.audio.resample import StreamResampler
from voxline.providers.tts.base import AudioChunk, TTSError
from voxline.telemetry import counters

OPEN_TIMEOUT = 5.0
"""Seconds to connect (TCP, TLS, WebSocket upgrade or HTTP headers) before the voice counts as
down: a fallback chain moves on, and the caller does not wait longer for the first word."""
IDLE_TIMEOUT = 5.0
"""Seconds without a message from a voice in the middle of a sentence before it counts as
failed (a socket can stay open and silent when the far side hangs)."""
MAX_MESSAGE = 16 * 1024 * 1024
"""Largest WebSocket message accepted: a long sentence of 48 kHz PCM in base64 fits."""
CHARS_PER_SECOND = 14.0
"""Speaking rate assumed when a provider does not say which words a chunk speaks (about 150
words a minute). Used only to spread the text over chunks; the last chunk gets the rest."""
HOLD_SECONDS = 0.01
"""Audio held back from each chunk until the next, so the last chunk can carry the last words."""

_EXACT_MULAW = mulaw_decode(bytes(range(256))).copy()
_EXACT_MULAW[0x7F] = -1


def exact_mulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """G.711 µ-law bytes to PCM16 such that the channel's encoder returns the same bytes."""
    return _EXACT_MULAW[np.frombuffer(data, dtype=np.uint8)]


def secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def websocket_base(url: str) -> str:
    """A configured base URL as a WebSocket base: http(s) becomes ws(s), no trailing slash."""
    url = url.rstrip("/")
    for web, socket in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(web):
            return socket + url[len(web) :]
    return url


def failure(label: str, message: str) -> TTSError:
    """A voice's failure, counted (`voxline_provider_failures{role="tts"}`)."""
    counters.provider_failure("tts", label)
    return TTSError(f"{label}: {message}", provider=label)


async def open_socket(
    url: str, headers: dict[str, str], *, label: str, open_timeout: float
) -> ClientConnection:
    """A voice's WebSocket, or a `TTSError` when it is refused or cannot be reached in time."""
    try:
        return await connect(
            url,
            additional_headers=headers,
            open_timeout=open_timeout,
            close_timeout=1.0,
            max_size=MAX_MESSAGE,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise failure(label, f"the socket was refused: HTTP {status}") from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise failure(label, f"cannot connect: {exc or type(exc).__name__}") from exc


class SocketVoice:
    """How a WebSocket voice is configured: `PROVIDER:VOICE_ID` (its label), a model (the
    provider's default when None), the key, a base URL (`VOXLINE_<PROVIDER>_BASE_URL`; http(s)
    is taken as ws(s)), and the connect and idle timeouts. Subclasses name the provider."""

    provider: ClassVar[str]
    default_base_url: ClassVar[str]
    default_model: ClassVar[str]

    def __init__(
        self,
        voice_id: str,
        *,
        api_key: str,
        model: str | None = None,
        base_url: str | None = None,
        open_timeout: float = OPEN_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.voice_id = voice_id
        self.model = model or self.default_model
        self.label = f"{self.provider}:{voice_id}"
        self._api_key = api_key
        self._base = websocket_base(base_url or self.default_base_url)
        self._open_timeout = open_timeout
        self._idle_timeout = idle_timeout

    def _error(self, message: str) -> TTSError:
        return failure(self.label, message)


class PcmBytes:
    """Little-endian PCM16 from a byte stream whose reads may split a sample."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> npt.NDArray[np.int16]:
        data = self._carry + data
        whole = len(data) - len(data) % 2
        self._carry = data[whole:]
        return np.frombuffer(data[:whole], dtype="<i2").astype(np.int16)


class Utterance:
    """One sentence's audio from a provider, re-cut into `AudioChunk`s at `output_rate` that
    carry the words they speak (see the module doc)."""

    def __init__(
        self,
        text: str,
        *,
        source_rate: int,
        output_rate: int,
        progress: Callable[[float], int | None] | None = None,
    ) -> None:
        """`progress(seconds)`, when given, says how many characters of the text the first
        `seconds` of audio speak (None: it does not know yet)."""
        self.text = text
        self._progress_at = progress
        self.rate = output_rate
        self._resampler = (
            StreamResampler(source_rate, output_rate) if source_rate != output_rate else None
        )
        self._hold = max(1, round(HOLD_SECONDS * output_rate))
        self._held: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)
        self._credited = 0  # characters of `text` given to chunks so far
        self._reported: int | None = None  # characters the provider says it has spoken
        self.seconds = 0.0  # audio handed out so far
        stripped = text.rstrip()
        self._last_word = stripped.rfind(" ") + 1 if " " in stripped else 0

    @property
    def audio_started(self) -> bool:
        return self.seconds > 0 or len(self._held) > 0

    def spoken(self, chars: int) -> None:
        """The provider says the first `chars` characters of the text are in the audio so far."""
        self._reported = max(self._reported or 0, chars)

    def feed(self, pcm: npt.NDArray[np.int16]) -> AudioChunk | None:
        """Audio at the provider's rate; a chunk to play now, or None while too little came."""
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        if not len(pcm):
            return None
        audio = np.concatenate((self._held, pcm)) if len(self._held) else pcm
        if len(audio) <= self._hold:
            self._held = audio
            return None
        out, self._held = audio[: -self._hold], audio[-self._hold :]
        self.seconds += len(out) / self.rate
        return AudioChunk(out, self.rate, self._credit(self._progress()), exact=True)

    def finish(self) -> AudioChunk | None:
        """The provider is done: the audio held back, with the words not yet credited."""
        if self._resampler is not None:
            tail = self._resampler.flush()
            if len(tail):
                self._held = np.concatenate((self._held, tail))
        held, self._held = self._held, np.zeros(0, dtype=np.int16)
        if not len(held):
            return None
        self.seconds += len(held) / self.rate
        return AudioChunk(held, self.rate, self._credit(len(self.text)), exact=True)

    def abandon(self) -> AudioChunk | None:
        """The provider failed midway: the audio held back (real speech, so it is played),
        credited only with the words known to be spoken; the rest is for another voice."""
        held, self._held = self._held, np.zeros(0, dtype=np.int16)
        if not len(held):
            return None
        self.seconds += len(held) / self.rate
        return AudioChunk(held, self.rate, self._credit(self._progress()), exact=True)

    def _progress(self) -> int:
        """Where the words spoken so far end: whole words only, never the last one."""
        known = self._progress_at(self.seconds) if self._progress_at is not None else None
        if known is None:
            known = self._reported
        target = int(self.seconds * CHARS_PER_SECOND) if known is None else known
        target = min(target, self._last_word)
        if target >= len(self.text) or target <= self._credited:
            return self._credited
        if self.text[target - 1].isspace():
            return target
        cut = self.text.rfind(" ", self._credited, target)
        return cut + 1 if cut >= 0 else self._credited

    def _credit(self, end: int) -> str:
        start, self._credited = self._credited, max(self._credited, end)
        return self.text[start : self._credited]
