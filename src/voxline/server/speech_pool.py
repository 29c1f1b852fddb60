"""Speech models for Media Streams calls: loaded once per process, shared by every call.

A model loading when a call connects would be paid for by the caller in seconds of silence, so
the agents hosted at start-up have theirs loaded (and warmed) in the background as the server
starts, and agents defined later load theirs on their first call. Each distinct (STT, TTS,
hints) set loads once; the heavy weights underneath are shared per process anyway
(`voxline.providers.local_runtime`), so a second set costs only its own model.

Browser calls share the pool, but not always the recognizer: a bare `local` STT resolves per
channel (`stt_spec_for`), so phone audio gets the model measured best at 8 kHz and browser audio
the faster one; the resolved spec is what the pool keys on, so each model loads once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from voxline.agents.spec import AgentSpec
from voxline.providers.stt.whisper import Channel
from voxline.settings import Settings
from voxline.voice.providers import (
    SpeechProviders,
    load_speech_providers,
    stt_spec_for,
    tts_spec_for,
)

log = structlog.get_logger("voxline.server.speech")


class SpeechPool:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loads: dict[tuple[str, str, tuple[str, ...]], asyncio.Task[SpeechProviders]] = {}

    async def get(self, spec: AgentSpec, *, channel: Channel = "wideband") -> SpeechProviders:
        """The agent's providers (its own STT/TTS specs, else the settings' defaults) for audio
        from `channel` (`phone` for Media Streams). Raises `ConfigurationError` when a model is
        missing; the next call tries again."""
        return await asyncio.shield(self._load(spec, channel))

    def warm_up(self, specs: Iterable[AgentSpec], *, channel: Channel = "wideband") -> None:
        """Start loading for these agents' calls on `channel` now, without waiting; failures
        are logged here (a call to such an agent will fail the same way, and say so)."""
        for spec in specs:
            self._load(spec, channel).add_done_callback(_report)

    async def close(self) -> None:
        for task in self._loads.values():
            task.cancel()
        await asyncio.gather(*self._loads.values(), return_exceptions=True)
        self._loads.clear()

    def _load(self, spec: AgentSpec, channel: Channel) -> asyncio.Task[SpeechProviders]:
        # The resolved spec (`local` -> `local:base` on the phone) is handed on, so the loader
        # needs no channel argument and each model loads once per process.
        stt = stt_spec_for(spec, channel, self._settings.stt)
        key = (stt, tts_spec_for(spec, self._settings.tts), tuple(spec.stt_hints))
        task = self._loads.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            resolved = spec.model_copy(update={"stt": key[0], "tts": key[1]})
            task = self._loads[key] = asyncio.create_task(
                load_speech_providers(resolved, vad=self._settings.vad, settings=self._settings)
            )
        return task


def _report(task: asyncio.Task[SpeechProviders]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("speech models for Media Streams calls could not be loaded", error=str(exc))
