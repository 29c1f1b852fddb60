"""Whisper decoding with the encoder's window fitted to the utterance instead of 30 s.

Whisper's encoder always reads a 30 s window: a 2 s question is padded with 28 s of silence and
the encoder, most of the work for a short utterance, pays for all of it (tiny.en on 2 cores:
~0.23 s to encode 30 s, ~0.035 s for 10 s; attention grows with the square of the length).
A caller's turn is a few seconds, and the reply waits for its transcript, so that padding is the
single largest cost between the end of a turn and the model starting to answer.

CTranslate2's encoder takes a shorter mel window as it is; only the padding after the audio
changes (whisper.cpp's `audio_ctx` applies the same idea). But a window that is too short makes
Whisper repeat itself ("What is the capital of France? What is the capital of France? ..."):
on 48 listener-cut prefixes of four Piper questions a window of the utterance plus 1 s repeated
15 times, 5 s 13 of 64, 8 s 2 of 56, 10 s 1 of 56, 15 s never. So the window is at least
`MIN_WINDOW` (15 s) and longer utterances get theirs plus `FIT_MARGIN`; the encoder still does
about a third of the full window's work. As a second guard, words that repeat a run of three or
more words back to back send the utterance through the full window, which does not loop.

Utterances too long for one window (over 30 s less the margin) go through faster-whisper's own
segmenting transcription too: `transcribe_fitted` returns None and its caller falls back.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.providers.stt.base import Transcript, TranscriptSegment

FRAMES_PER_SECOND = 100  # Whisper's mel hop is 10 ms
FULL_WINDOW = 3000  # 30 s: the longest window the encoder's positions cover
MIN_WINDOW = 1500  # 15 s: shorter windows make Whisper repeat itself (module doc)
FIT_MARGIN = 1.0  # seconds of silence after the utterance: the model expects to hear it end
FIT_STEP = 100  # windows are rounded up to whole seconds (fewer distinct shapes)
MIN_REPEAT = 3  # words in a run that, said twice back to back, looks like a decoding loop
MAX_TOKENS = 224  # Whisper's own cap on the text of one window
# faster-whisper's defaults for deciding a window holds no speech (a cough, line noise)
NO_SPEECH_PROBABILITY = 0.6
NO_SPEECH_LOGPROB = -1.0


def window_frames(frames: int) -> int | None:
    """The fitted window for `frames` of mel features, or None when it would not fit in 30 s."""
    wanted = math.ceil((frames + FIT_MARGIN * FRAMES_PER_SECOND) / FIT_STEP) * FIT_STEP
    return max(MIN_WINDOW, wanted) if wanted <= FULL_WINDOW else None


def looks_looped(text: str) -> bool:
    """The words hold a run of `MIN_REPEAT` or more words said twice back to back: Whisper's
    decoding loop, or (rarely) a caller repeating themselves; either way the full window,
    which does not loop, decides."""
    words = [word.strip(".,!?;:'\"").lower() for word in text.split()]
    for size in range(MIN_REPEAT, len(words) // 2 + 1):
        for start in range(len(words) - 2 * size + 1):
            if words[start : start + size] == words[start + size : start + 2 * size]:
                return True
    return False


@functools.lru_cache(maxsize=8)
def _tokens(model: Any, language: str) -> tuple[Any, list[int]]:
    """The tokenizer for `language` and the tokens never to emit (timestamps aside), once per
    model and language."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    tokenizer = Tokenizer(
        model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
    )
    return tokenizer, list(get_suppressed_tokens(tokenizer, [-1]))


def _prompt(model: Any, tokenizer: Any, text: str | None) -> list[int]:
    """Start-of-transcript tokens, preceded by `text` as earlier context (the hint prompt),
    text only (no timestamps): faster-whisper's layout for an `initial_prompt`."""
    tokens: list[int] = []
    if text:
        earlier = tokenizer.encode(" " + text.strip())
        tokens = [tokenizer.sot_prev, *earlier[-(model.max_length // 2 - 1) :]]
    return [*tokens, *tokenizer.sot_sequence, tokenizer.no_timestamps]


def transcribe_fitted(
    model: Any,
    audio: npt.NDArray[np.float32],
    *,
    language: str,
    beam_size: int,
    prompt: str | None,
) -> Transcript | None:
    """`audio` (16 kHz float) transcribed in one fitted window; None if it is too long for one
    or the words look like a decoding loop (the caller then uses the full transcription)."""
    features = model.feature_extractor(audio)
    frames = int(features.shape[-1])
    window = window_frames(frames)
    if window is None:
        return None
    padded = np.zeros((features.shape[0], window), dtype=np.float32)
    padded[:, :frames] = features
    tokenizer, suppressed = _tokens(model, language)
    tokens = _prompt(model, tokenizer, prompt)
    result = model.model.generate(
        model.encode(padded),
        [tokens],
        beam_size=beam_size,
        max_length=len(tokens) + MAX_TOKENS,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=suppressed,
    )[0]
    ids = result.sequences_ids[0]
    duration = len(audio) / 16000
    # The mean log-probability per token, as faster-whisper recovers it (length penalty 1).
    logprob = result.scores[0] * len(ids) / (len(ids) + 1) if ids else -math.inf
    if result.no_speech_prob > NO_SPEECH_PROBABILITY and logprob < NO_SPEECH_LOGPROB:
        return Transcript(text="", language=language, audio_duration=duration)
    text = tokenizer.decode(ids).strip()
    if looks_looped(text):
        return None
    segments = [TranscriptSegment(text, 0.0, duration)] if text else []
    return Transcript(text=text, language=language, segments=segments, audio_duration=duration)
