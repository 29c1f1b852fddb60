from __future__ import annotations

import numpy as np

from voxline.audio.buffers import Recording, SampleRing


def joined(parts: tuple[np.ndarray, ...]) -> list[int]:
    return np.concatenate(parts).tolist() if parts else []


def test_ring_keeps_the_latest_samples_in_order_across_wraps() -> None:
    ring = SampleRing(5)
    assert ring.latest(3) == ()
    ring.write(np.array([1, 2, 3], dtype=np.int16))
    assert joined(ring.latest(10)) == [1, 2, 3]
    ring.write(np.array([4, 5, 6, 7], dtype=np.int16))  # wraps
    assert joined(ring.latest(5)) == [3, 4, 5, 6, 7]
    assert len(ring.latest(5)) == 2  # two views, no copy
    assert joined(ring.latest(2)) == [6, 7]
    ring.write(np.arange(100, 112, dtype=np.int16))  # longer than the ring
    assert joined(ring.latest(5)) == [107, 108, 109, 110, 111]
    ring.clear()
    assert ring.size == 0 and ring.latest(5) == ()


def test_a_zero_capacity_ring_holds_nothing() -> None:
    ring = SampleRing(0)
    ring.write(np.arange(4, dtype=np.int16))
    assert ring.latest(4) == ()


def test_recording_grows_and_never_rewrites_memory_behind_a_view() -> None:
    recording = Recording(initial=4, limit=100)
    recording.start()
    recording.append(np.array([1, 2, 3], dtype=np.int16))
    early = recording.view(0, 3)
    recording.append(np.array([4, 5, 6, 7], dtype=np.int16))  # grows past the first array
    assert recording.view(0, recording.length).tolist() == [1, 2, 3, 4, 5, 6, 7]
    recording.start()  # views were taken: the next utterance gets fresh memory
    recording.append(np.array([9, 9, 9], dtype=np.int16))
    assert early.tolist() == [1, 2, 3]
    assert not early.flags.writeable


def test_recording_reuses_its_memory_when_nothing_was_shared() -> None:
    recording = Recording(initial=8, limit=8)
    recording.start()
    recording.append(np.array([1, 2], dtype=np.int16))
    recording.start()
    recording.append(np.array([3], dtype=np.int16))
    view = recording.view(0, recording.length)
    assert view.tolist() == [3]
    assert view.base is not None and view.base.shape == (8,)
