"""Sample-rate conversion with soxr, done once per stream at the channel edge.

A resampler carries filter state from one frame to the next; restarting it per frame would add
edge artefacts (clicks every 20 ms) and filter start-up cost. So each stream (one caller's
inbound audio, one reply's outbound audio) owns one `StreamResampler` for its lifetime.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from voxline.audio.upsample import IntegerUpsampler

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]

_EMPTY = np.zeros(0, dtype=np.int16)


def _soxr() -> Any:
    try:
        import soxr
    except ImportError as exc:  # soxr ships in the `voice` and `local` extras
        raise ImportError(
            "resampling needs the `soxr` package: pip install 'voxline[voice]'"
        ) from exc
    return soxr


class StreamResampler:
    """Converts one continuous PCM16 stream from `in_rate` to `out_rate`, chunk by chunk.

    Output lags input by the filter delay (about 30 ms at "HQ"), and the first calls may return
    nothing while the filter fills; `flush()` drains the tail at the end of the stream. When the
    rates are equal the input is handed back unchanged (no copy, no delay). Upsampling by a
    whole factor (the phone's 8 kHz to 16 kHz) uses `IntegerUpsampler` instead of soxr, whose
    streaming mode returns that ratio in 104 ms blocks (`voxline.audio.upsample`): every frame
    comes out at once, 2 ms late. `quality` applies to soxr only.
    """

    def __init__(self, in_rate: int, out_rate: int, *, quality: Quality = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream: Any = None
        if out_rate > in_rate and out_rate % in_rate == 0:
            self._stream = _Upsampling(out_rate // in_rate)
        elif in_rate != out_rate:
            self._stream = _soxr().ResampleStream(
                in_rate, out_rate, 1, dtype="int16", quality=quality
            )

    def process(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        if self._stream is None:
            return pcm
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(np.ascontiguousarray(pcm))
        return out

    def flush(self) -> npt.NDArray[np.int16]:
        """Returns the samples still inside the filter and readies the resampler for a new
        stream (soxr refuses input after its last chunk, so the state is cleared here)."""
        if self._stream is None:
            return _EMPTY
        tail: npt.NDArray[np.int16] = self._stream.resample_chunk(_EMPTY, last=True)
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """Drops buffered input, e.g. when a reply is cut off and the next one starts fresh."""
        if self._stream is not None:
            self._stream.clear()


class _Upsampling:
    """`IntegerUpsampler` behind the part of soxr's stream interface used above."""

    def __init__(self, factor: int) -> None:
        self._upsampler = IntegerUpsampler(factor)

    def resample_chunk(
        self, pcm: npt.NDArray[np.int16], last: bool = False
    ) -> npt.NDArray[np.int16]:
        out = self._upsampler.process(pcm)
        return np.concatenate([out, self._upsampler.flush()]) if last else out

    def clear(self) -> None:
        self._upsampler.reset()


def resample(
    pcm: npt.NDArray[np.int16], in_rate: int, out_rate: int, *, quality: Quality = "HQ"
) -> npt.NDArray[np.int16]:
    """One-shot conversion of a whole clip (a WAV file, a finished TTS utterance); whole-factor
    upsampling uses the same filter as `StreamResampler`, so a stream and a clip agree."""
    if in_rate == out_rate:
        return pcm
    if out_rate > in_rate and out_rate % in_rate == 0:
        upsampler = IntegerUpsampler(out_rate // in_rate)
        return np.concatenate([upsampler.process(pcm), upsampler.flush()])
    out: npt.NDArray[np.int16] = _soxr().resample(
        np.ascontiguousarray(pcm), in_rate, out_rate, quality=quality
    )
    return out
