"""Low-delay streaming upsampling by a whole factor (the phone's 8 kHz to the models' 16 kHz).

soxr is the resampler everywhere else, but for 8 kHz -> 16 kHz its streaming mode works in
blocks: fed 20 ms Twilio frames it returns nothing for the first five, then 1,660 samples
(104 ms) every fifth frame. The VAD behind it then hears the caller up to a tenth of a second
late and in bursts, which delays every end of turn and every barge-in on a phone call by that
much (and made all calls' VAD work arrive in the same loop turn). Other ratios (48 or 24 kHz
to 16 kHz, 16 kHz to 48 kHz) come out every frame or two, so only whole-factor upsampling is
done here.

The filter is a windowed-sinc low-pass (Kaiser window, beta 8: over 70 dB of image rejection)
run as a polyphase FIR: each output phase is one short convolution of the input, the history
between frames is the last `taps_per_phase - 1` input samples, and every input frame gives its
output at once. Its group delay is `DELAY_INPUT_SAMPLES` input samples (2 ms at 8 kHz). The
pass band ends at `PASSBAND` of the input's Nyquist frequency (3.8 kHz of a phone line's
4 kHz, above the 3.4 kHz the telephone network carries). On `benchmarks/stt_accuracy.py` the
8 kHz WER was 21.4% with it, as with soxr (20.3% with the band ending at 3.6 kHz, within the
set's noise; that filter misheard a digit of a Piper zip code that this one and soxr hear).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

TAPS_PER_PHASE = 32
PASSBAND = 0.95  # of the input's Nyquist frequency
KAISER_BETA = 8.0
DELAY_INPUT_SAMPLES = TAPS_PER_PHASE // 2  # what `flush` feeds to drain the filter

Float = npt.NDArray[np.float64]
Float32 = npt.NDArray[np.float32]


@functools.cache
def phase_filters(factor: int) -> Float:
    """(TAPS_PER_PHASE, factor) polyphase filters of the low-pass for upsampling by `factor`
    (oldest input first), with the gain of `factor` that zero-stuffing loses."""
    length = factor * TAPS_PER_PHASE - 1  # odd: the delay is a whole number of samples
    centre = (length - 1) / 2
    cutoff = PASSBAND / (2 * factor)  # cycles per output sample
    n = np.arange(length) - centre
    prototype = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(length, KAISER_BETA)
    prototype *= factor / prototype.sum()
    prototype = np.append(prototype, 0.0)
    # Output sample factor*m + p sums prototype[factor*k + p] * x[m - k]; reversed along k,
    # each phase is a dot product with the window of the last TAPS_PER_PHASE inputs.
    return prototype.reshape(TAPS_PER_PHASE, factor)[::-1].copy()


class IntegerUpsampler:
    """One PCM16 stream upsampled by `factor`, frame by frame, with no block buffering.

    Like soxr's streams, the output is aligned with the input: the filter's warm-up (its delay,
    `factor * TAPS_PER_PHASE // 2 - 1` output samples) is dropped, so the first frame gives that
    much less, every later frame exactly `factor` times its length, and `flush` the rest: a
    whole stream comes out exactly `factor` times as long, in step with the one-shot result."""

    def __init__(self, factor: int) -> None:
        if factor < 2:
            raise ValueError(f"the upsampling factor must be at least 2, got {factor}")
        self.factor = factor
        self._filters: Float32 = phase_filters(factor).astype(np.float32)
        self.delay = factor * TAPS_PER_PHASE // 2 - 1  # output samples
        self._history: Float32 = np.zeros(TAPS_PER_PHASE - 1, np.float32)
        self._skip = self.delay  # warm-up samples still to drop
        self._owed = 0  # input samples times factor, less what was emitted

    def process(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        if not len(pcm):
            return np.zeros(0, dtype=np.int16)
        signal = np.empty(TAPS_PER_PHASE - 1 + len(pcm), np.float32)
        signal[: TAPS_PER_PHASE - 1] = self._history
        signal[TAPS_PER_PHASE - 1 :] = pcm
        self._history = signal[-(TAPS_PER_PHASE - 1) :].copy()
        self._owed += len(pcm) * self.factor
        return self._emit(self._filter(signal))

    def flush(self) -> npt.NDArray[np.int16]:
        """The samples still inside the filter, and a fresh state for the next stream."""
        drain = np.zeros(DELAY_INPUT_SAMPLES, np.float32)
        tail = self._filter(np.concatenate([self._history, drain]))
        out = self._emit(tail)[: self._owed]
        self.reset()
        return out

    def reset(self) -> None:
        self._history = np.zeros(TAPS_PER_PHASE - 1, np.float32)
        self._skip = self.delay  # warm-up samples still to drop
        self._owed = 0  # input samples times factor, less what was emitted

    def _emit(self, out: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        if self._skip:
            dropped = min(self._skip, len(out))
            self._skip -= dropped
            out = out[dropped:]
        self._owed -= len(out)
        return out

    def _filter(self, signal: Float32) -> npt.NDArray[np.int16]:
        """Every phase for each input sample with a full window behind it: one (samples x
        taps) @ (taps x factor) product over a strided view (no copy), float32 (the input
        has 16 bits), rounded back to PCM16 in place."""
        windows = np.lib.stride_tricks.as_strided(
            signal,
            (len(signal) - TAPS_PER_PHASE + 1, TAPS_PER_PHASE),
            (signal.strides[0], signal.strides[0]),
            writeable=False,
        )
        out = windows @ self._filters  # (input samples, factor): the phases interleave
        np.rint(out, out=out)
        np.clip(out, -32768, 32767, out=out)
        return out.astype(np.int16).reshape(-1)
