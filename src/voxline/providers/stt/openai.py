"""OpenAI transcription: `openai:gpt-4o-transcribe`, `openai:gpt-4o-mini-transcribe`,
`openai:whisper-1`, one utterance per request to `/v1/audio/transcriptions`.

**Client: the official `openai` SDK** (a core dependency, so no extra is needed), which does this
request well: multipart upload, retries, the key and `VOXLINE_OPENAI_BASE_URL` / `OPENAI_BASE_URL`
as for the LLM, so a private gateway or the tests' loopback fake serve it too.

**Why per utterance and not the Realtime transcription socket**: voxline's own VAD already cuts
the call into turns and transcribes the speech so far at the first pause (the listener's batch
path), so a request per utterance gets the same words at about the same moment. The Realtime
transcription session would add a second turn detector to reconcile with ours, 24 kHz PCM (or a
server VAD it does not let us drive per turn), and its `gpt-4o-transcribe` deltas arrive only
after a segment is committed, so they are no earlier than this. What this path lacks is interim
words during speech, so barge-in is judged on a transcription of the speech so far, as with
Whisper. Speech to this provider is 16 kHz PCM16 in a WAV file (a phone call's 8 kHz µ-law is
decoded and resampled once by the listener, as for Whisper).
"""

from __future__ import annotations

import io
from typing import Any

from voxline.audio.wav import write_wav
from voxline.providers.llm.base import ConfigurationError
from voxline.providers.stt.base import PCM16, Transcript
from voxline.providers.stt.streaming import is_silent
from voxline.settings import Settings
from voxline.telemetry import counters

KEY_HINT = "set VOXLINE_OPENAI_API_KEY (or OPENAI_API_KEY)"
MODELS = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "whisper-1")
TIMEOUT = 15.0  # seconds for one utterance: a caller waits for this


class OpenAISTT:
    """The batch `STT` protocol over OpenAI's transcription endpoint."""

    sample_rate = 16000

    def __init__(self, model: str, client: Any) -> None:
        self.model = model
        self.label = f"openai:{model}"
        self._client = client

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        duration = len(pcm) / self.sample_rate
        if is_silent(pcm):
            return Transcript("", language=language, audio_duration=duration)
        wav = io.BytesIO()
        write_wav(wav, pcm, self.sample_rate)
        options: dict[str, Any] = {}
        if language:
            options["language"] = language
        counters.provider_request("stt", self.label)
        try:
            result = await self._client.audio.transcriptions.create(
                model=self.model,
                file=("speech.wav", wav.getvalue(), "audio/wav"),
                response_format="json",
                **options,
            )
        except Exception:
            counters.provider_failure("stt", self.label)
            raise
        return Transcript(str(result.text).strip(), language=language, audio_duration=duration)


def create_openai_stt(model: str | None, settings: Settings) -> OpenAISTT:
    """`openai:MODEL` with the OpenAI key and base URL from `settings`."""
    if not model:
        raise ConfigurationError(f"name an OpenAI transcription model: {', '.join(MODELS)}")
    key = settings.openai_api_key
    if key is None:
        raise ConfigurationError(f"openai:{model} needs an API key: {KEY_HINT}")
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        api_key=key.get_secret_value(),
        base_url=settings.openai_base_url,
        timeout=TIMEOUT,
        max_retries=1,
    )
    return OpenAISTT(model, client)
