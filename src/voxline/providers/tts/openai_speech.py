"""OpenAI voices (`openai:gpt-4o-mini-tts`, `openai:tts-1`, ...) over the speech endpoint
(`POST /audio/speech`), the voice being the agent's `voice` (`alloy` when it names none).

The official `openai` SDK (a core dependency): `audio.speech.with_streaming_response.create`
streams the response body as it arrives, which is all a voice needs, and it already handles the
key, `VOXLINE_OPENAI_BASE_URL` and error statuses for the LLM provider. The body is asked for as
`pcm` (raw 16-bit little-endian, 24 kHz mono, no header), the one format that needs no decoder;
reads may split a sample, so bytes are re-joined (`PcmBytes`). The endpoint has no µ-law and no
other rate, so on the phone the audio is resampled to 8 kHz here, with one stream resampler per
sentence (no clicks at read boundaries), and the channel encodes it. Retries are off: a failed
voice is better replaced by the next one in a fallback chain than waited for. Stopping early
(barge-in) closes the response, which stops the download.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import openai

from voxline.providers.tts.base import AudioChunk, OutputChannel, TTSError
from voxline.providers.tts.hosted import IDLE_TIMEOUT, OPEN_TIMEOUT, PcmBytes, Utterance
from voxline.telemetry import counters

DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
NATIVE_RATE = 24000  # what `response_format="pcm"` is


class OpenAISpeechTTS:
    """The `TTS` protocol over OpenAI's speech endpoint (see the module doc)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        api_key: str,
        base_url: str | None = None,
        instructions: str | None = None,
        open_timeout: float = OPEN_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.model = model
        self.label = f"openai:{model}"
        self.sample_rate = NATIVE_RATE
        self._instructions = instructions
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=openai.Timeout(idle_timeout, connect=open_timeout),
            max_retries=0,
        )

    def for_channel(self, channel: OutputChannel) -> OpenAISpeechTTS:
        """This voice resampled to `channel`'s rate here, per sentence, on the same client."""
        view = copy.copy(self)
        view.sample_rate = channel.sample_rate
        return view

    async def aclose(self) -> None:
        await self._client.close()

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        """Stream `text` in `voice` (the agent's), as the response body arrives."""
        if not text.strip():
            return
        counters.provider_request("tts", self.label)
        utterance = Utterance(text, source_rate=NATIVE_RATE, output_rate=self.sample_rate)
        pcm = PcmBytes()
        speech = self._client.audio.speech.with_streaming_response
        failure: TTSError | None = None
        try:
            async with speech.create(
                model=self.model,
                voice=voice or DEFAULT_VOICE,
                input=text.strip(),
                response_format="pcm",
                instructions=self._instructions or openai.omit,
            ) as response:
                async for data in response.iter_bytes():
                    chunk = utterance.feed(pcm.feed(data))
                    if chunk is not None:
                        yield chunk
        except openai.APIStatusError as exc:
            failure = self._error(f"HTTP {exc.status_code}: {_message(exc)}", exc)
        except openai.APIError as exc:
            failure = self._error(str(exc) or type(exc).__name__, exc)
        except (OSError, TimeoutError) as exc:
            failure = self._error(f"the response broke off: {exc or type(exc).__name__}", exc)
        except Exception as exc:
            # The SDK's transport raises its own errors mid-body (a read timeout, a dropped
            # connection): a failed voice all the same.
            if type(exc).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore"):
                raise
            failure = self._error(f"the response broke off: {exc or type(exc).__name__}", exc)
        if failure is not None:
            tail = utterance.abandon()  # real speech: played before the failure is raised
            if tail is not None:
                yield tail
            raise failure
        last = utterance.finish()
        if last is not None:
            yield last

    def _error(self, message: str, cause: Exception) -> TTSError:
        counters.provider_failure("tts", self.label)
        error = TTSError(f"{self.label}: {message}", provider=self.label)
        error.__cause__ = cause
        return error


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message
