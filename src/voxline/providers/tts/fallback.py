"""A chain of voices (`"elevenlabs:VOICE,local"`): the next one speaks when one fails.

Like `FallbackLLM`, a voice that fails before any audio is replaced by the next for the whole
sentence. Unlike an LLM answer, speech can be spliced: a voice that drops mid-sentence has said
some words (each chunk says which), so the next voice speaks the rest of that sentence, and the
caller hears a change of voice rather than silence. Every move is a log line (`tts_fallover`),
a counter, and a report to the call's `OutputChannel.on_failure` (the speaker emits it as an
`error` event on the session bus), so no gap in speech goes unexplained. Each sentence starts
again from the first voice: a provider that is back is used again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import structlog

from voxline.providers.tts.base import (
    TTS,
    AudioChunk,
    OutputChannel,
    TTSError,
    for_channel,
)
from voxline.telemetry import counters

log = structlog.get_logger("voxline.tts")


class FallbackTTS:
    """Speaks with the first of `voices` that works (see the module doc)."""

    def __init__(self, voices: Sequence[TTS], *, channel: OutputChannel | None = None) -> None:
        if not voices:
            raise ValueError("FallbackTTS needs at least one voice")
        self.voices = list(voices)
        self.label = f"fallback({','.join(voice.label for voice in self.voices)})"
        self.sample_rate = self.voices[0].sample_rate
        self._channel = channel

    def for_channel(self, channel: OutputChannel) -> FallbackTTS:
        """Each voice's view for `channel`; fall-overs are reported to it."""
        return FallbackTTS([for_channel(voice, channel) for voice in self.voices], channel=channel)

    async def aclose(self) -> None:
        for voice in self.voices:
            close = getattr(voice, "aclose", None)
            if callable(close):
                await close()

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        """The audio of `text`: from the first voice, and from the next ones for whatever a
        failed voice did not say. Raises `TTSError` when the last voice fails too."""
        rest = text
        failures: list[Exception] = []
        for position, tts in enumerate(self.voices):
            said = 0  # characters of `rest` this voice has spoken
            stream = tts.synthesize(rest, voice=voice)
            try:
                async for chunk in stream:
                    found = rest.find(chunk.text, said) if chunk.text else -1
                    if found >= 0:
                        said = found + len(chunk.text)
                    yield chunk
                return
            except Exception as exc:  # any failure of a voice is a fall-over, bugs included
                failures.append(exc)
                remaining = rest[said:]
                following = self.voices[position + 1] if position + 1 < len(self.voices) else None
                self._fall_over(tts, exc, spoken=said, remaining=remaining, following=following)
                if not remaining.strip():
                    return  # it failed after its last word: nothing is missing
                rest = remaining
            finally:
                with contextlib.suppress(Exception):
                    await _close(stream)
        error = TTSError(
            f"{self.label}: every voice failed ({'; '.join(str(e) for e in failures)})",
            provider=self.label,
        )
        raise error from failures[-1]

    def _fall_over(
        self, tts: TTS, exc: Exception, *, spoken: int, remaining: str, following: TTS | None
    ) -> None:
        counters.fallback(tts.label)
        log.warning(
            "tts_fallover",
            tts=self.label,
            provider=tts.label,
            reason=str(exc) or type(exc).__name__,
            mid_sentence=spoken > 0,
            remaining_chars=len(remaining),
            next_provider=following.label if following is not None else None,
            exc_info=exc if not isinstance(exc, TTSError) else None,
        )
        if following is not None and self._channel is not None:
            self._channel.on_failure(exc)


async def _close(stream: AsyncIterator[AudioChunk]) -> None:
    """Release a voice's stream (its socket or response) even when it stopped early."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
