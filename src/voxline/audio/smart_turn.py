"""Semantic end of turn from the caller's voice: the smart-turn v3 model, run offline.

A fixed silence either cuts people off mid-number ("my number is four one five ...") or makes
every answer wait for the longest pause anyone takes. Smart-turn v3 (BSD-2-Clause, by Daily)
listens to the last 8 s of the turn - words *and* intonation - and says whether the speaker
sounds finished. Its ONNX file ships inside the `pipecat-ai` wheel; voxline depends on that wheel
(extra `smart-turn`) for the file only and never imports pipecat: the features are computed here
(Whisper-style log-mel, numpy) and the model runs on onnxruntime.

The features match the reference: on the same audio they are bit-identical to those of the
wheel's own analyzer (8 s window, zero-padded in front, waveform normalised, Slaney mel), and so
are its predictions - where it is wrong, the model is.

And it is wrong in one place that matters on a phone line: read-out digits ("my number is four
one five") and a half-said e-mail address have the flat, falling pitch of a finished sentence,
and smart-turn calls them complete (0.86-0.96 with espeak-ng and Piper voices). So the words
check the voice:

- While the caller talks, the listener transcribes the turn so far every `transcribe_every`
  seconds of speech (`update_partial`). Those words are late by up to a second, too late to
  judge an ending, but early enough to see a number or an address being read out
  (`still_dictating`): such a cue is said before the digits, and the digits take longer.
- After a short silence (`ask_after`) the audio so far goes to the model on a worker thread (the
  gate polls `is_complete` once per VAD chunk on the event loop and never waits for it).
  "Complete" ends the turn at once - unless the early words show dictation or miss more than
  `max_unheard` seconds of speech; then the pause's own transcript (`update_transcript`)
  decides: words that stop mid-number, mid-address or on "and" keep the turn open.
- "Incomplete" waits for `max_silence`, which also bounds a model or recognizer that is slow;
  at the silence rule's time the model is asked once more if the pause's words sound finished.
  If the model fails, the plain silence rule takes over, so a broken install degrades to the
  default behaviour instead of a stuck call.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

log = structlog.get_logger("voxline.audio")

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 8  # the model sees the last 8 s of the turn, zero-padded in front
N_FFT = 400  # 25 ms windows
HOP = 160  # 10 ms hop: 800 frames for 8 s
N_MELS = 80
FRAMES = WINDOW_SECONDS * SAMPLE_RATE // HOP

PCM16 = npt.NDArray[np.int16]
Float32 = npt.NDArray[np.float32]


class SmartTurnUnavailable(RuntimeError):
    """The model file is not installed (`pip install 'voxline[smart-turn]'`)."""


def model_path() -> Path:
    """The smart-turn v3 ONNX file inside the installed `pipecat-ai` wheel.

    Found through the package's location without importing it: importing pipecat would start its
    logging and pull in modules voxline has no use for."""
    spec = importlib.util.find_spec("pipecat")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        folder = Path(root) / "audio" / "turn" / "smart_turn" / "data"
        found = sorted(folder.glob("smart-turn-v3*cpu*.onnx")) or sorted(
            folder.glob("smart-turn-v3*.onnx")
        )
        if found:
            return found[-1]  # the newest 3.x release in the wheel
    raise SmartTurnUnavailable(
        "the smart-turn model is not installed: pip install 'voxline[smart-turn]' "
        "(its ONNX file ships in the pipecat-ai wheel)"
    )


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as Whisper was trained on."""
    linear = 3.0 * hz / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = 200.0 * mel / 3.0
    log_part = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


@functools.cache
def mel_filters() -> npt.NDArray[np.float64]:
    """(N_MELS, N_FFT // 2 + 1) triangular filters, area-normalised (Slaney), 0-8 kHz."""
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges_mel = np.linspace(
        _hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2.0)), N_MELS + 2
    )
    edges = _mel_to_hz(edges_mel)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= 2.0 / (upper - lower)
    return filters


@functools.cache
def _window() -> npt.NDArray[np.float64]:
    """Periodic Hann window (the STFT convention Whisper's features use)."""
    return np.hanning(N_FFT + 1)[:-1]


def log_mel(pcm: PCM16) -> Float32:
    """(80, 800) Whisper-style log-mel features of the last 8 s of 16 kHz PCM16.

    Shorter audio is zero-padded in front (the model expects the turn's end at the window's
    end); the waveform is normalised to zero mean and unit variance, as the model was trained."""
    size = WINDOW_SECONDS * SAMPLE_RATE
    audio = np.zeros(size, dtype=np.float32)
    tail = pcm[-size:]
    if len(tail):
        audio[size - len(tail) :] = tail.astype(np.float32) / 32768.0
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    padded = np.pad(audio.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:FRAMES]
    power = np.abs(np.fft.rfft(frames * _window(), axis=1)) ** 2
    mel = np.log10(np.maximum(mel_filters() @ power.T, 1e-10))
    mel = np.maximum(mel, mel.max() - 8.0)
    features: Float32 = ((mel + 4.0) / 4.0).astype(np.float32)
    return features


class SmartTurnModel:
    """The ONNX session; `predict` gives the probability that the speaker has finished.

    One session serves every call in the process (`shared()`); onnxruntime's `run` is safe to
    call from several threads. One intra-op thread: a turn decision is a few tens of
    milliseconds, and the cores belong to the audio paths of the other calls."""

    def __init__(self, path: Path | None = None, *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.path = path or model_path()
        self._session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    @staticmethod
    @functools.cache
    def shared() -> SmartTurnModel:
        return SmartTurnModel()

    def predict(self, pcm: PCM16) -> float:
        """Probability in [0, 1] that the turn in `pcm` (16 kHz mono PCM16) is complete."""
        features = log_mel(pcm)[None, :, :]
        outputs: list[Any] = self._session.run(None, {self._input: features})
        return float(np.asarray(outputs[0]).reshape(-1)[0])


_executor_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _worker() -> ThreadPoolExecutor:
    """One thread for every call's predictions: requests queue instead of stealing cores."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")
        return _executor


# words no sentence ends on
_TRAILING = frozenset(
    "and or but so because the a an to at of for with from in on my is are was uh um like "  # noqa: SIM905
    "dot then plus".split()
)
_DIGITS = frozenset("zero oh one two three four five six seven eight nine".split())  # noqa: SIM905
_NUMBER_CUES = ("number", "phone", "card", "code", "zip", "account", "digits")
_EMAIL_CUES = ("email", "e-mail", "mail address")
_ANNOUNCED = re.compile(r"\b(is|it's|its|was)\b|:")
# the domain part of an address as Whisper writes it: "@example.com", "at example dot com"
_DOMAIN = re.compile(
    r"(@|\bat\b)\s*[\w.\s-]*?(\.|\bdot\b)\s*(com|org|net|edu|gov|io|co|us|uk|ca|de|fr|info)\b"
)


def _words(text: str) -> list[str]:
    words = [w.strip(".,!?;:'\"").lower() for w in text.split()]
    return [w for w in words if w]


def _digits(word: str) -> int:
    """Digits in one word: "four" 1, "415" 3, Whisper's "415-555" or "7.7" 6 and 2."""
    plain = word.replace("-", "").replace(".", "").replace(",", "")
    return len(plain) if plain.isdigit() else int(word in _DIGITS)


def _trailing_digits(words: list[str]) -> tuple[int, int]:
    """(digits, words) of the run of spoken or written digits that ends `words`."""
    digits = count = 0
    for word in reversed(words):
        found = _digits(word)
        if not found:
            break
        digits += found
        count += 1
    return digits, count


def _number_unfinished(text: str, words: list[str]) -> bool:
    """A phone/card/account number shorter than any real one (fewer than 7 digits)."""
    digits, _ = _trailing_digits(words)
    lowered = text.lower()
    return 0 < digits < 7 and any(cue in lowered for cue in _NUMBER_CUES)


def _email_unfinished(text: str) -> bool:
    """An e-mail address announced ("my email is ...", "email, which is ...") whose domain
    has not been said yet."""
    lowered = text.lower()
    at = max(lowered.rfind(cue) for cue in _EMAIL_CUES)
    if at < 0:
        return False
    announced = _ANNOUNCED.search(lowered, at)
    return announced is not None and _DOMAIN.search(lowered, announced.end()) is None


def sounds_unfinished(text: str) -> bool:
    """The transcript of a whole turn stops where no sentence does: on a conjunction, article
    or preposition, inside a phone/card/account number shorter than any real one (fewer than
    7 digits), or inside an announced e-mail address before its domain."""
    words = _words(text)
    if not words:
        return False
    return words[-1] in _TRAILING or _number_unfinished(text, words) or _email_unfinished(text)


def still_dictating(text: str) -> bool:
    """A transcript of the turn's *beginning* (taken while the caller was still talking) shows
    them reading out a number or an e-mail address that it does not yet complete.

    Only cues that later words cannot make harmless count: unlike `sounds_unfinished`, a prefix
    ending on "of" says nothing (the question may well end after it). This is where smart-turn
    is known to be wrong - read-out digits have the flat, falling pitch of a finished sentence -
    so such a turn waits for the words of the whole pause instead of the voice's verdict."""
    words = _words(text)
    if not words:
        return False
    if _number_unfinished(text, words) or _email_unfinished(text):
        return True
    digits, count = _trailing_digits(words)
    if count == len(words) and digits < 7:
        return True  # the turn so far is nothing but digits
    mail = max((i for i, w in enumerate(words) if "email" in w or "e-mail" in w), default=-1)
    if mail >= 0 and len(words) - mail <= 3:
        return True  # "... to my email, which": the address may come next
    cue = max((i for i, w in enumerate(words) if any(c in w for c in _NUMBER_CUES)), default=-1)
    if cue < 0:
        return False
    after = words[cue + 1 :]
    # a number announced, and fewer digits heard since than any real one has ("my number",
    # "my number is", Whisper's "the account number to 7.7" for "... is seven seven")
    return all(w in {"is", "it's", "its", "was"} for w in after) or (
        0 < sum(_digits(w) for w in after) < 7
    )


class SmartTurnEndOfTurn:
    """End-of-turn strategy that asks smart-turn v3, with the words as a check (module doc).

    Its inputs beyond the silence: `listen(source)`, the turn's audio so far (the listener's
    `speech_so_far`; without it only the silence rule applies); `update_partial(text, covers)`,
    words of the turn's first `covers` seconds transcribed while the caller talked (the listener
    does this every `transcribe_every` seconds of speech); `update_transcript(text)`, the words
    of the whole turn up to the current pause (the listener's early transcript of each pause).

    When the model says "complete" the turn ends at once, unless the words already heard show
    the caller reading out a number or an address (`still_dictating`) or miss more than
    `max_unheard` seconds of speech: then it waits for the pause's own words, which end it if
    they sound finished and hold it open to `max_silence` if not (`sounds_unfinished`).
    `wait_for_words=True` always waits for them (or for `silence`). `decisions` records, per
    pause that reached the model, its probability.
    """

    def __init__(
        self,
        model: Callable[[], SmartTurnModel] = SmartTurnModel.shared,
        *,
        ask_after: float = 0.2,
        max_silence: float = 2.0,
        silence: float = 0.6,
        threshold: float = 0.5,
        wait_for_words: bool = False,
        transcribe_every: float | None = 0.5,
        max_unheard: float = 1.0,
    ) -> None:
        if not 0 < ask_after <= silence <= max_silence:
            raise ValueError(
                "need 0 < ask_after <= silence <= max_silence, got "
                f"{ask_after}, {silence}, {max_silence}"
            )
        self.ask_after = ask_after
        self.max_silence = max_silence
        self.silence = silence  # the rule when the model cannot answer
        self.threshold = threshold
        self.wait_for_words = wait_for_words  # "complete" always needs the pause's words too
        self.transcribe_every = transcribe_every  # read by the listener (see the class doc)
        self.max_unheard = max_unheard  # speech the while-speaking words may miss
        self.decisions: list[float] = []
        self._model = model
        self._source: Callable[[], PCM16] | None = None
        self._future: Future[float] | None = None
        self._verdict: float | None = None
        self._rechecked = False  # this pause's model has been asked a second time
        self._failed = False
        self._last = 0.0
        self._text: str | None = None  # the words up to this pause
        self._partial: str | None = None  # the words of an earlier moment of this turn
        self._covered = 0.0  # seconds of the turn's audio `_partial` covers
        self._spoken = 0.0  # seconds of the turn's audio up to the current pause
        _worker().submit(self._load)  # load while the first caller is still talking

    def _load(self) -> None:
        try:
            self._model()
        except Exception as exc:  # reported again, once, when a pause asks
            log.warning("smart-turn model failed to load", error=str(exc))

    def listen(self, source: Callable[[], PCM16]) -> None:
        """Where the turn's 16 kHz audio so far comes from."""
        self._source = source

    def _predict(self, pcm: PCM16) -> float:
        return self._model().predict(pcm)

    def is_complete(self, silence: float) -> bool:
        if silence <= self._last:  # speech resumed: a new pause, earlier answers are stale
            self._forget()
        self._last = silence
        if silence >= self.max_silence:
            return True
        if self._failed or self._source is None:
            return silence >= self.silence
        if self._future is None and silence >= self.ask_after:
            pcm = self._source()
            self._spoken = len(pcm) / SAMPLE_RATE - silence  # the turn up to its last speech
            self._future = _worker().submit(self._predict, pcm)
        elif self._recheck(silence):
            self._rechecked, self._verdict = True, None
            self._future = _worker().submit(self._predict, self._source())
        if self._verdict is None and self._future is not None and self._future.done():
            error = self._future.exception()
            if error is not None:
                log.warning("smart-turn failed: the silence rule decides", error=str(error))
                self._failed = True
                return silence >= self.silence
            self._verdict = self._future.result()
            self.decisions.append(self._verdict)
        if self._text is not None:  # the words of the whole turn are in
            if sounds_unfinished(self._text):
                return False  # the words say more is coming, whatever the voice says
            if self._verdict is None:  # the model is behind other calls: words and rule agree
                return not self._rechecked and silence >= self.silence
            return self._verdict >= self.threshold
        if self._verdict is None or self._verdict < self.threshold:
            return False
        if self.wait_for_words:
            return silence >= self.silence
        # The voice sounds finished. Words that miss more than the last `max_unheard` s of
        # speech could miss the start of a number (which takes longer than that to read out):
        # wait for the pause's words. Otherwise only a number or address being read out waits.
        if self._spoken - self._covered > self.max_unheard:
            return False
        return self._partial is None or not still_dictating(self._partial)

    def _recheck(self, silence: float) -> bool:
        """Ask once more at the silence rule's time when the voice sounded unfinished but the
        pause's words do not: with more of the pause to hear, the model often changes its mind
        (flat read-out speech), and the words still veto what they must."""
        return (
            not self._rechecked
            and silence >= self.silence
            and self._verdict is not None
            and self._verdict < self.threshold
            and self._text is not None
            and not sounds_unfinished(self._text)
        )

    def update_partial(self, text: str, covers: float) -> None:
        """Words of this turn's first `covers` seconds of audio (transcribed while the caller
        talked): enough to see a number or an address being read out, not to judge the end."""
        if self._text is None and covers >= self._covered:
            self._partial, self._covered = text, covers

    def update_transcript(self, text: str) -> None:
        """The words of the turn up to this pause (the listener transcribes each pause early):
        a turn that ends on "and" or mid-way through a phone number is not over, however final
        the voice sounded - the model misjudges flat synthetic and read-out speech."""
        self._text = text
        if self._source is not None:  # all of it: only silence came after the pause began
            self._covered = len(self._source()) / SAMPLE_RATE

    @property
    def words(self) -> str | None:
        """The latest words of the turn this strategy has (logs, benchmarks)."""
        return self._text if self._text is not None else self._partial

    def reset(self) -> None:
        self._forget()
        self._partial, self._covered = None, 0.0
        self._last = 0.0

    def _forget(self) -> None:
        if self._future is not None:
            self._future.cancel()  # still queued behind another call's: never run it
        self._future = None
        self._verdict = None
        self._rechecked = False
        if self._text is not None:  # the words to a pause the caller talked past
            self._partial = self._text
        self._text = None
