"""Speech providers chosen by spec string: `local`, `whisper:tiny.en`, `piper`, `silero`, the
hosted recognizers `deepgram:MODEL`, `openai:MODEL`, `assemblyai:MODEL` (a comma-separated STT
spec is a fallback chain: `deepgram:nova-3,local`), and the hosted voices `elevenlabs:VOICE`,
`cartesia:VOICE`, `openai:MODEL` (a comma-separated TTS spec is a fallback chain:
`elevenlabs:VOICE,local`).

Each factory imports its provider module only when that provider is asked for, so a text-only
install never imports CTranslate2, onnxruntime or the GPL Piper runtime. An unknown spec, a
missing model or a missing key raises `ConfigurationError` with one actionable line. Keys and
base URLs of hosted voices come from `Settings`, so a spec never carries a secret.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from voxline.providers.llm.base import ConfigurationError, MissingKeyError
from voxline.providers.stt.base import STT
from voxline.providers.tts.base import TTS
from voxline.providers.vad.base import VAD
from voxline.settings import Settings

log = structlog.get_logger("voxline.providers")
HOSTED_TTS = {
    # prefix: (the settings field of its key, the variable to set)
    "elevenlabs": ("elevenlabs_api_key", "ELEVENLABS_API_KEY"),
    "cartesia": ("cartesia_api_key", "CARTESIA_API_KEY"),
    "openai": ("openai_api_key", "OPENAI_API_KEY"),
}


def _split(spec: str) -> tuple[str, str | None]:
    name, _, argument = spec.strip().partition(":")
    return name.lower(), argument or None


HOSTED_STT = {
    # prefix: (the settings field of its key, the variable to set, the base URL field)
    "deepgram": ("deepgram_api_key", "DEEPGRAM_API_KEY", "deepgram_base_url"),
    "assemblyai": ("assemblyai_api_key", "ASSEMBLYAI_API_KEY", "assemblyai_base_url"),
    "openai": ("openai_api_key", "OPENAI_API_KEY", "openai_base_url"),
}
STT_SPECS = (
    "'local', 'whisper[:MODEL]', 'deepgram:nova-3', 'deepgram:flux-general-en', "
    "'openai:gpt-4o-transcribe', 'openai:whisper-1', 'assemblyai:universal-streaming', "
    "or 'a,b' to fall back from a to b"
)


def create_stt(
    spec: str = "local", settings: Settings | None = None, *, hints: Sequence[str] = ()
) -> STT:
    """`local` or `whisper` (tiny.en, bundled), `local:base`, `whisper:tiny.en`,
    `whisper:/path/to/model` (`voice.providers.stt_spec_for` picks the model for a channel);
    the hosted `deepgram:MODEL`, `openai:MODEL`, `assemblyai:MODEL` (keys and base URLs from
    `settings`, else the environment); `a,b` falls back from a to b (`deepgram:nova-3,local`).
    `hints`: the agent's `stt_hints`, for recognizers that take them (the local one)."""
    parts = [part.strip() for part in spec.split(",")]
    if len(parts) > 1:
        if not all(parts):
            raise ConfigurationError(f"empty provider in STT chain {spec!r}")
        from voxline.providers.stt.fallback import FallbackSTT

        settings = settings if settings is not None else Settings()
        recognizers = _stt_chain(parts, settings, hints)
        return recognizers[0] if len(recognizers) == 1 else FallbackSTT(recognizers)
    return _create_one_stt(spec, settings, hints)


def _stt_chain(parts: list[str], settings: Settings, hints: Sequence[str] = ()) -> list[STT]:
    """The recognizers of a chain. One whose key is not set is left out (one warning per
    process) while another remains, as in LLM and voice chains: `deepgram:nova-3,local` means
    "Deepgram when there is a key, Whisper otherwise". Any other error still fails."""
    import structlog

    recognizers: list[STT] = []
    skipped: list[tuple[str, ConfigurationError]] = []
    for part in parts:
        try:
            recognizers.append(_create_one_stt(part, settings, hints))
        except ConfigurationError as exc:
            if stt_key_present(_split(part)[0], settings) is not False:
                raise
            skipped.append((part, exc))
    if not recognizers:
        raise skipped[0][1]
    for part, reason in skipped:
        if part not in _warned_stt_skips:
            _warned_stt_skips.add(part)
            structlog.get_logger("voxline.providers").warning(
                f"{part} left out of the STT fallback chain: {reason}"
            )
    return recognizers


_warned_stt_skips: set[str] = set()


def _create_one_stt(spec: str, settings: Settings | None, hints: Sequence[str] = ()) -> STT:
    name, argument = _split(spec)
    if name in ("local", "whisper"):
        from voxline.providers.stt.whisper import create_whisper_stt

        return create_whisper_stt(argument, hints=hints)
    settings = settings if settings is not None else Settings()
    if name in HOSTED_STT and not argument:
        raise ConfigurationError(f"{name} needs a model: use {STT_SPECS}")
    if name == "deepgram":
        from voxline.providers.stt.deepgram import create_deepgram_stt

        return create_deepgram_stt(argument, settings)
    if name == "openai":
        from voxline.providers.stt.openai import create_openai_stt

        return create_openai_stt(argument, settings)
    if name == "assemblyai":
        from voxline.providers.stt.assemblyai import create_assemblyai_stt

        return create_assemblyai_stt(argument, settings)
    raise ConfigurationError(f"unknown STT provider {spec!r}: use {STT_SPECS}")


def stt_key_present(name: str, settings: Settings) -> bool | None:
    """Whether the key of hosted recognizer `name` is configured; None for a local one."""
    if name not in HOSTED_STT:
        return None
    return getattr(settings, HOSTED_STT[name][0]) is not None


def create_tts(spec: str = "local", settings: Settings | None = None) -> TTS:
    """`local` or `piper` (the bundled joe voice), `piper:/path/to/voice.onnx`,
    `elevenlabs:VOICE_ID[#MODEL]`, `cartesia:VOICE_ID[#MODEL]`, `openai:MODEL`; `a,b` falls back
    from `a` to `b` (see `providers.tts.fallback`)."""
    parts = [part.strip() for part in spec.split(",")]
    if not all(parts):
        raise ConfigurationError(f"empty TTS spec in {spec!r}; use e.g. elevenlabs:VOICE,local")
    if len(parts) > 1:
        from voxline.providers.tts.fallback import FallbackTTS

        settings = settings if settings is not None else Settings()
        voices = _tts_chain(parts, settings)
        return voices[0] if len(voices) == 1 else FallbackTTS(voices)
    name, argument = _split(spec)
    if name in ("local", "piper"):
        from voxline.providers.tts.piper import create_piper_tts

        return create_piper_tts(argument)
    if name in HOSTED_TTS:
        return _hosted_tts(name, argument, settings if settings is not None else Settings())
    raise ConfigurationError(
        f"unknown TTS provider {spec!r}: use 'local', 'piper[:VOICE]', 'elevenlabs:VOICE', "
        "'cartesia:VOICE' or 'openai:MODEL'"
    )


def _tts_chain(parts: list[str], settings: Settings) -> list[TTS]:
    """The voices of a chain. One whose key is not set is skipped (one warning per process)
    while another remains, as in LLM chains: `elevenlabs:VOICE,local` means "ElevenLabs when
    there is a key, the local voice otherwise". Any other error still fails: no typo hides."""
    voices: list[TTS] = []
    skipped: list[tuple[str, ConfigurationError]] = []
    for part in parts:
        try:
            voices.append(create_tts(part, settings))
        except ConfigurationError as exc:
            if not isinstance(exc, MissingKeyError):
                raise
            skipped.append((part, exc))
    if not voices:
        raise skipped[0][1]
    for part, reason in skipped:
        if part not in _warned_skips:
            _warned_skips.add(part)
            log.warning(f"{part} skipped in the voice fallback chain: {reason}")
    return voices


_warned_skips: set[str] = set()


def tts_key_present(name: str, settings: Settings) -> bool | None:
    """Whether the key of hosted voice `name` is configured; None for a local voice."""
    if name not in HOSTED_TTS:
        return None
    key = getattr(settings, HOSTED_TTS[name][0])
    return key is not None and bool(key.get_secret_value())


def _hosted_tts(name: str, argument: str | None, settings: Settings) -> TTS:
    from voxline.providers.tts.hosted import secret

    field, variable = HOSTED_TTS[name]
    key = secret(getattr(settings, field))
    if not key:
        raise MissingKeyError(f"{name} voices need an API key: set {variable}")
    target, _, model = (argument or "").partition("#")
    if name == "openai":
        from voxline.providers.tts.openai_speech import DEFAULT_MODEL, OpenAISpeechTTS

        base_url = settings.openai_base_url
        return OpenAISpeechTTS(target or DEFAULT_MODEL, api_key=key, base_url=base_url)
    if not target:
        raise ConfigurationError(
            f"{name} needs a voice id: '{name}:VOICE_ID', or the agent's `voice`"
        )
    if name == "elevenlabs":
        from voxline.providers.tts import elevenlabs

        return elevenlabs.ElevenLabsTTS(
            target,
            api_key=key,
            model=model or elevenlabs.DEFAULT_MODEL,
            base_url=settings.elevenlabs_base_url,
        )
    from voxline.providers.tts import cartesia

    return cartesia.CartesiaTTS(
        target,
        api_key=key,
        model=model or cartesia.DEFAULT_MODEL,
        base_url=settings.cartesia_base_url,
    )


def create_vad(spec: str = "local") -> VAD:
    """`local` or `silero` (Silero v6 from faster-whisper)."""
    name, argument = _split(spec)
    if name in ("local", "silero") and argument in (None, "v6"):
        from voxline.providers.vad.silero import create_silero_vad

        return create_silero_vad()
    raise ConfigurationError(f"unknown VAD provider {spec!r}: use 'local' or 'silero'")
