"""Speech providers chosen by spec string: `local`, `whisper:tiny.en`, `piper`, `silero`.

Each factory imports its provider module only when that provider is asked for, so a text-only
install never imports CTranslate2, onnxruntime or the GPL Piper runtime. An unknown spec or a
missing model raises `ConfigurationError` with one actionable line.
"""

from __future__ import annotations

from voxline.providers.llm.base import ConfigurationError
from voxline.providers.stt.base import STT
from voxline.providers.tts.base import TTS
from voxline.providers.vad.base import VAD


def _split(spec: str) -> tuple[str, str | None]:
    name, _, argument = spec.strip().partition(":")
    return name.lower(), argument or None


def create_stt(spec: str = "local") -> STT:
    """`local` or `whisper` (tiny.en, bundled), `whisper:tiny.en`, `whisper:/path/to/model`."""
    name, argument = _split(spec)
    if name in ("local", "whisper"):
        from voxline.providers.stt.whisper import create_whisper_stt

        return create_whisper_stt(argument)
    raise ConfigurationError(f"unknown STT provider {spec!r}: use 'local' or 'whisper[:MODEL]'")


def create_tts(spec: str = "local") -> TTS:
    """`local` or `piper` (the bundled joe voice), `piper:/path/to/voice.onnx`."""
    name, argument = _split(spec)
    if name in ("local", "piper"):
        from voxline.providers.tts.piper import create_piper_tts

        return create_piper_tts(argument)
    raise ConfigurationError(f"unknown TTS provider {spec!r}: use 'local' or 'piper[:VOICE]'")


def create_vad(spec: str = "local") -> VAD:
    """`local` or `silero` (Silero v6 from faster-whisper)."""
    name, argument = _split(spec)
    if name in ("local", "silero") and argument in (None, "v6"):
        from voxline.providers.vad.silero import create_silero_vad

        return create_silero_vad()
    raise ConfigurationError(f"unknown VAD provider {spec!r}: use 'local' or 'silero'")
