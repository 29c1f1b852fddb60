"""A chain of recognizers, `"deepgram:nova-3,local"`: the next one when the first fails.

For one utterance (`transcribe`) that is simple: try each in order, log each fall-over, raise
only when all failed. For a call, the per-call `LiveTranscriber` walks the same chain (`providers`)
with reconnects and a re-send of the turn's audio, so a stream that drops mid-call costs no
words; this class is then only the list it walks.
"""

from __future__ import annotations

import time

import structlog

from voxline.providers.stt.base import PCM16, STT, Transcript
from voxline.telemetry import counters

log = structlog.get_logger("voxline.stt")


class FallbackSTT:
    def __init__(self, providers: list[STT]) -> None:
        if not providers:
            raise ValueError("FallbackSTT needs at least one recognizer")
        rates = {provider.sample_rate for provider in providers}
        if len(rates) != 1:
            raise ValueError(f"the recognizers of a chain take different sample rates: {rates}")
        self.providers = providers
        self.sample_rate = rates.pop()
        self.label = ",".join(provider.label for provider in providers)

    def load(self) -> float:
        """Load every local model of the chain now, so a fall-over mid-call does not wait for
        one; the seconds it took."""
        started = time.perf_counter()
        for provider in self.providers:
            load = getattr(provider, "load", None)
            if callable(load):
                load()
        return time.perf_counter() - started

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        error: Exception | None = None
        for position, provider in enumerate(self.providers):
            try:
                return await provider.transcribe(pcm, language=language)
            except Exception as exc:
                error = exc
                rest = self.providers[position + 1 :]
                counters.fallback(provider.label)
                log.warning(
                    "stt_fallover",
                    provider=provider.label,
                    reason=str(exc) or type(exc).__name__,
                    next_provider=rest[0].label if rest else None,
                )
        assert error is not None
        raise error
