"""Whisper decoding with the encoder's window fitted to the utterance instead of 30 s.

Whisper's encoder always reads a 30 s window: a 2 s question is padded with 28 s of silence and
the encoder, most of the work for a short utterance, pays for all of it (tiny.en on 2 cores:
~0.23 s to encode 30 s, ~0.035 s for 10 s; attention grows with the square of the length).
A caller's turn is a few seconds, and the reply waits for its transcript, so that padding is the
single largest cost between the end of a turn and the model starting to answer.

CTranslate2's encoder takes a shorter mel window as it is; only the padding after the audio
changes. Here the window is the utterance plus `FIT_MARGIN` seconds of silence (whisper.cpp's
`audio_ctx` applies the same idea). Measured by `benchmarks/stt_accuracy.py` (44 sentences x
espeak-ng and Piper voices, 2 cores), with a beam of 5 the fitted window was as accurate as the
full one and about three times faster (see docs/performance.md); greedy decoding loses more
words with it, so the channel defaults use a beam of 5.

Utterances too long for one window (over 30 s less the margin) go through faster-whisper's own
segmenting transcription, which this module's caller falls back to.
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
FIT_MARGIN = 1.0  # seconds of silence after the utterance: the model expects to hear it end
FIT_STEP = 100  # windows are rounded up to whole seconds (fewer distinct shapes)
MAX_TOKENS = 224  # Whisper's own cap on the text of one window
# faster-whisper's defaults for deciding a window holds no speech (a cough, line noise)
NO_SPEECH_PROBABILITY = 0.6
NO_SPEECH_LOGPROB = -1.0


def window_frames(frames: int) -> int | None:
    """The fitted window for `frames` of mel features, or None when it would not fit in 30 s."""
    wanted = math.ceil((frames + FIT_MARGIN * FRAMES_PER_SECOND) / FIT_STEP) * FIT_STEP
    return wanted if wanted <= FULL_WINDOW else None


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
    (the caller then uses the full transcription)."""
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
    segments = [TranscriptSegment(text, 0.0, duration)] if text else []
    return Transcript(text=text, language=language, segments=segments, audio_duration=duration)
