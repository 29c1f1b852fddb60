from __future__ import annotations

import numpy as np
import pytest

from voxline.audio.codecs import AudioFormatError
from voxline.audio.frames import AudioFrame


def test_duration_end_and_bytes() -> None:
    frame = AudioFrame(np.arange(320, dtype=np.int16), 16000, timestamp=1.5)
    assert frame.num_samples == 320
    assert frame.duration == pytest.approx(0.02)
    assert frame.end == pytest.approx(1.52)
    assert AudioFrame.from_bytes(frame.to_bytes(), 16000, 1.5).pcm.tolist() == frame.pcm.tolist()


def test_from_bytes_and_slice_are_views() -> None:
    data = bytearray(640)
    frame = AudioFrame.from_bytes(data, 16000, timestamp=2.0)
    part = frame.slice(160, 320)
    assert part.timestamp == pytest.approx(2.01)
    assert frame.slice(-160).timestamp == pytest.approx(2.01)
    assert np.shares_memory(part.pcm, frame.pcm)
    data[320] = 5
    assert part.pcm[0] == 5
    assert not np.shares_memory(frame.copy().pcm, frame.pcm)


def test_rejects_what_is_not_mono_pcm16() -> None:
    with pytest.raises(ValueError, match="int16"):
        AudioFrame(np.zeros(10, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="int16"):
        AudioFrame(np.zeros((10, 2), dtype=np.int16), 16000)
    with pytest.raises(ValueError, match="positive"):
        AudioFrame(np.zeros(10, dtype=np.int16), 0)
    with pytest.raises(AudioFormatError):
        AudioFrame.from_bytes(b"\x00\x00\x00", 8000)
