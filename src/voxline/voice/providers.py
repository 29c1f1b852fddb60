"""The speech providers an agent asks for, loaded before its first caller speaks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from voxline.agents.spec import AgentSpec
from voxline.providers.factory import create_stt, create_tts, create_vad
from voxline.providers.stt.base import STT
from voxline.providers.stt.whisper import Channel, resolve_local_spec
from voxline.providers.tts.base import TTS
from voxline.providers.tts.fallback import with_reconnect
from voxline.providers.vad.base import VAD
from voxline.settings import Settings


@dataclass(frozen=True)
class SpeechProviders:
    stt: STT
    tts: TTS
    vad: VAD


def tts_spec_for(spec: AgentSpec, default: str = "local") -> str:
    """The TTS spec an agent speaks with: its own `tts` (else `default`), with its `voice`
    appended when the spec names none itself (`piper` + voice `/v/x.onnx` -> `piper:/v/x.onnx`),
    because local engines pick the voice when they load, not per sentence."""
    tts = spec.tts or default
    if spec.voice and ":" not in tts:
        return f"{tts}:{spec.voice}"
    return tts


def stt_spec_for(spec: AgentSpec, channel: Channel, default: str = "local") -> str:
    """The STT spec an agent listens with on `channel`: its own `stt` (else `default`), with a
    bare `local` naming the embedded model measured best for that channel's audio
    (`local` -> `local:base` on the phone, `local:tiny.en` in the browser); see
    `voxline.providers.stt.whisper`."""
    return resolve_local_spec(spec.stt or default, channel)


async def load_speech_providers(
    spec: AgentSpec,
    *,
    vad: str = "local",
    settings: Settings | None = None,
    channel: Channel = "wideband",
) -> SpeechProviders:
    """The agent's STT and TTS (`local` when it names none) and the `vad` detector, with their
    models loaded off the event loop now: a model loading during the first turn would be
    paid for by the caller. Hosted providers take their keys and base URLs from `settings`
    (the server's, so a flag or `.env` entry counts as much as the environment; None: read
    the environment now). `channel` is the audio the recognizer will hear (`phone`: 8 kHz
    Media Streams; `wideband`: the browser, the terminal), which picks what a bare `local`
    means. Raises `ConfigurationError` with an install hint if one is missing."""
    providers = SpeechProviders(
        create_stt(stt_spec_for(spec, channel), settings, hints=spec.stt_hints),
        with_reconnect(create_tts(tts_spec_for(spec), settings)),
        create_vad(vad),
    )
    local: list[object] = []
    for model in (providers.stt, providers.tts):
        load = getattr(model, "load", None)  # local engines load weights; hosted ones do not
        if callable(load):
            await asyncio.to_thread(load)
            local.append(model)
    # A local model's first call pays one-off set-up (allocations, kernel selection): not the
    # caller. Hosted services are not warmed: a request would cost money and a failure there
    # must not refuse calls a fallback could take.
    if providers.stt in local:
        await providers.stt.transcribe(np.zeros(providers.stt.sample_rate // 2, dtype=np.int16))
    if providers.tts in local:
        async for _ in providers.tts.synthesize("Hello."):
            pass
    return providers
