"""The phone's 8 kHz -> 16 kHz upsampler: every frame out at once, speech band kept, images gone.

soxr's streaming mode returns this ratio in 104 ms blocks, which made the VAD hear phone callers
late and in bursts; these tests pin what replaced it (`voxline.audio.upsample`)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxline.audio.resample import StreamResampler
from voxline.audio.upsample import IntegerUpsampler

RATE = 8000
FRAME = 160  # 20 ms, a Twilio Media Streams frame


def tone(hz: float, seconds: float = 1.0, level: float = 8000.0) -> npt.NDArray[np.int16]:
    t = np.arange(round(RATE * seconds)) / RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def level_db(pcm: npt.NDArray[np.int16], rate: int, hz: float) -> float:
    """The level of the `hz` component of `pcm`, in dB (Hann-windowed spectrum)."""
    part = pcm[rate // 8 : rate // 8 + rate // 2].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(part * np.hanning(len(part))))
    bins = np.fft.rfftfreq(len(part), 1 / rate)
    return float(20 * np.log10(spectrum[np.argmin(np.abs(bins - hz))] + 1e-9))


def test_every_frame_comes_out_at_once_twice_as_long() -> None:
    upsampler = IntegerUpsampler(2)
    signal = tone(440)
    sizes = [len(upsampler.process(signal[i : i + FRAME])) for i in range(0, len(signal), FRAME)]
    assert sizes[0] == 2 * FRAME - upsampler.delay  # the filter's warm-up, 2 ms
    assert set(sizes[1:]) == {2 * FRAME}
    stream = StreamResampler(RATE, 16000)
    sizes = [len(stream.process(signal[i : i + FRAME])) for i in range(0, 5 * FRAME, FRAME)]
    assert all(size > 0 for size in sizes)  # soxr gave nothing for 5 frames, then 104 ms


def test_frame_by_frame_equals_all_at_once_and_flush_drains_the_delay() -> None:
    signal = tone(1000) + tone(2500, level=3000)
    framed = IntegerUpsampler(2)
    pieces = [framed.process(signal[i : i + FRAME]) for i in range(0, len(signal), FRAME)]
    tail = framed.flush()
    assert len(tail) == framed.delay
    assert sum(map(len, pieces)) + len(tail) == 2 * len(signal)
    whole = IntegerUpsampler(2)
    assert np.array_equal(
        np.concatenate([*pieces, tail]), np.concatenate([whole.process(signal), whole.flush()])
    )


def test_the_speech_band_passes_and_the_images_are_rejected() -> None:
    for hz in (300.0, 1000.0, 3000.0):
        out = IntegerUpsampler(2).process(tone(hz))
        gain = level_db(out, 16000, hz) - level_db(tone(hz), RATE, hz)
        assert abs(gain - 20 * np.log10(2)) < 0.5, (hz, gain)  # twice the samples, same tone
        image = level_db(out, 16000, RATE - hz)  # zero-stuffing's mirror above 4 kHz
        assert level_db(out, 16000, hz) - image > 70, (hz, image)


def test_reset_forgets_the_previous_stream() -> None:
    upsampler = IntegerUpsampler(2)
    upsampler.process(tone(1000))
    upsampler.reset()
    silence = upsampler.process(np.zeros(FRAME, np.int16))
    assert not silence.any()
