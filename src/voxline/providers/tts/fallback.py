"""A chain of voices (`"elevenlabs:VOICE,local"`): the next one speaks when one fails.

Like `FallbackLLM`, a voice that fails before any audio is replaced by the next for the whole
sentence. Unlike an LLM answer, speech can be spliced: a voice that drops mid-sentence has said
some words (each chunk says which), so the rest of that sentence is said by the same voice on a
new connection (`reconnects` times: a dropped socket is usually one network blip), then by the
next voice; the caller hears a short gap or a change of voice rather than silence. Every move is
a log line (`tts_reconnect`, `tts_fallover`), a counter, and a report to the call's
`OutputChannel.on_failure` (the speaker emits it as an `error` event on the session bus), so no
gap in speech goes unexplained. Each sentence starts again from the first voice: a provider that
is back is used again.

`with_reconnect` gives a hosted voice that has no chain of its own the same reconnect (a chain
of one), which is how a served agent's voice is loaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import structlog

from voxline.providers.tts.base import (
    TTS,
    AudioChunk,
    ChannelAware,
    OutputChannel,
    TTSError,
    for_channel,
)
from voxline.telemetry import counters

log = structlog.get_logger("voxline.tts")
RECONNECTS = 1
"""New connections a voice gets, per sentence, for the rest of a sentence it dropped midway."""


class FallbackTTS:
    """Speaks with the first of `voices` that works (see the module doc)."""

    def __init__(
        self,
        voices: Sequence[TTS],
        *,
        channel: OutputChannel | None = None,
        reconnects: int = RECONNECTS,
    ) -> None:
        if not voices:
            raise ValueError("FallbackTTS needs at least one voice")
        self.voices = list(voices)
        labels = ",".join(voice.label for voice in self.voices)
        # A chain of one is that voice (with reconnects): logs and metrics name the provider.
        self.label = labels if len(self.voices) == 1 else f"fallback({labels})"
        self.sample_rate = self.voices[0].sample_rate
        self.reconnects = reconnects
        self._channel = channel

    def for_channel(self, channel: OutputChannel) -> FallbackTTS:
        """Each voice's view for `channel`; reconnects and fall-overs are reported to it."""
        voices = [for_channel(voice, channel) for voice in self.voices]
        return FallbackTTS(voices, channel=channel, reconnects=self.reconnects)

    async def aclose(self) -> None:
        for voice in self.voices:
            close = getattr(voice, "aclose", None)
            if callable(close):
                await close()

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        """The audio of `text`: from the first voice, and for whatever a failed voice did not
        say, from that voice again (after a drop mid-sentence) or the next ones. Raises
        `TTSError` when the last voice fails too."""
        rest = text
        failures: list[Exception] = []
        for position, tts in enumerate(self.voices):
            following = self.voices[position + 1] if position + 1 < len(self.voices) else None
            retries = self.reconnects
            while True:
                said = 0  # characters of `rest` this attempt has spoken
                audio = False  # this attempt produced audio: it was working, then dropped
                stream = tts.synthesize(rest, voice=voice)
                try:
                    async for chunk in stream:
                        found = rest.find(chunk.text, said) if chunk.text else -1
                        if found >= 0:
                            said = found + len(chunk.text)
                        audio = True
                        yield chunk
                    return
                except Exception as exc:  # any failure of a voice is a fall-over, bugs included
                    failures.append(exc)
                    rest = rest[said:]
                    again = retries > 0 and audio and isinstance(exc, TTSError)
                    self._report(
                        tts, exc, spoken=said, rest=rest, next_voice=tts if again else following
                    )
                    if not rest.strip():
                        return  # it failed after its last word: nothing is missing
                finally:
                    with contextlib.suppress(Exception):
                        await _close(stream)
                if not again:
                    break
                retries -= 1
        error = TTSError(
            f"{self.label}: every voice failed ({'; '.join(str(e) for e in failures)})",
            provider=self.label,
        )
        raise error from failures[-1]

    def _report(
        self, tts: TTS, exc: Exception, *, spoken: int, rest: str, next_voice: TTS | None
    ) -> None:
        """A log line and a counter for each move; the call hears of it when someone speaks on
        (when nobody does, the error reaches the speaker, which reports it itself)."""
        reconnect = next_voice is tts
        if not reconnect:
            counters.fallback(tts.label)
        log.warning(
            "tts_reconnect" if reconnect else "tts_fallover",
            tts=self.label,
            provider=tts.label,
            reason=str(exc) or type(exc).__name__,
            mid_sentence=spoken > 0,
            remaining_chars=len(rest),
            next_provider=next_voice.label if next_voice is not None else None,
            exc_info=exc if not isinstance(exc, TTSError) else None,
        )
        if next_voice is not None and self._channel is not None:
            self._channel.on_failure(exc)


def with_reconnect(tts: TTS) -> TTS:
    """A hosted voice (one that adapts to its channel) as a chain of one, so a socket dropped
    mid-sentence is reconnected for the rest of it; a chain or a local voice as it is."""
    if isinstance(tts, FallbackTTS) or not isinstance(tts, ChannelAware):
        return tts
    return FallbackTTS([tts])


async def _close(stream: AsyncIterator[AudioChunk]) -> None:
    """Release a voice's stream (its socket or response) even when it stopped early."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
