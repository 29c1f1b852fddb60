"""Streaming resampling must sound like one-shot resampling, at the right length and pitch."""

from __future__ import annotations

import numpy as np
import pytest

from voxline.audio.resample import StreamResampler, resample


def tone(rate: int, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 10000).astype(np.int16)


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


def streamed(resampler: StreamResampler, pcm: np.ndarray, frame: int) -> np.ndarray:
    parts = [resampler.process(pcm[i : i + frame]) for i in range(0, len(pcm), frame)]
    return np.concatenate([*parts, resampler.flush()])


@pytest.mark.parametrize(
    ("source", "target"),
    [(8000, 16000), (16000, 8000), (22050, 8000), (24000, 8000), (44100, 16000)],
)
def test_one_shot_length_and_pitch(source: int, target: int) -> None:
    out = resample(tone(source), source, target)
    assert out.dtype == np.int16
    assert len(out) == target
    assert dominant_hz(out, target) == pytest.approx(440, abs=2)


@pytest.mark.parametrize(
    ("source", "target", "frame"), [(8000, 16000, 160), (22050, 8000, 441), (24000, 8000, 1000)]
)
def test_chunked_streaming_matches_one_shot(source: int, target: int, frame: int) -> None:
    pcm = tone(source)
    chunked = streamed(StreamResampler(source, target), pcm, frame)
    whole = resample(pcm, source, target)
    assert len(chunked) == len(whole)
    assert np.abs(chunked.astype(np.int32) - whole).max() <= 2  # rounding only


def test_flush_readies_the_resampler_for_the_next_stream() -> None:
    resampler = StreamResampler(8000, 16000)
    first = streamed(resampler, tone(8000), 160)
    second = streamed(resampler, tone(8000), 160)
    assert len(first) == len(second) == 16000
    assert np.abs(first.astype(np.int32) - second).max() <= 2  # soxr dithers int16 output


def test_reset_drops_buffered_input() -> None:
    resampler = StreamResampler(8000, 16000)
    resampler.process((np.ones(4000) * 20000).astype(np.int16))
    resampler.reset()
    out = streamed(resampler, np.zeros(8000, dtype=np.int16), 160)
    assert np.abs(out).max() <= 2  # dither only; the 20000-level input is gone


def test_equal_rates_pass_the_same_array_through() -> None:
    pcm = tone(16000)
    assert StreamResampler(16000, 16000).process(pcm) is pcm
    assert StreamResampler(16000, 16000).flush().shape == (0,)
    assert resample(pcm, 16000, 16000) is pcm


def test_non_contiguous_input_is_accepted() -> None:
    stereo = np.repeat(tone(8000), 2)
    assert len(resample(stereo[::2], 8000, 16000)) == 16000


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 16000)
