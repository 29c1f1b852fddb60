"""Sample buffers for the inbound hot path, sized once so a frame costs no allocation."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class SampleRing:
    """The most recent `capacity` samples, overwritten in place (the pre-roll history)."""

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(max(0, capacity), dtype=np.int16)
        self._pos = 0  # where the next sample goes
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, samples: npt.NDArray[np.int16]) -> None:
        capacity = self._buf.shape[0]
        count = samples.shape[0]
        if capacity == 0 or count == 0:
            return
        if count >= capacity:
            self._buf[:] = samples[count - capacity :]
            self._pos, self._size = 0, capacity
            return
        first = min(capacity - self._pos, count)
        self._buf[self._pos : self._pos + first] = samples[:first]
        self._buf[: count - first] = samples[first:]
        self._pos = (self._pos + count) % capacity
        self._size = min(capacity, self._size + count)

    def latest(self, count: int) -> tuple[npt.NDArray[np.int16], ...]:
        """The last `count` samples (fewer if not yet written), oldest first, as one or two
        views into the ring: valid until the next `write`."""
        count = min(count, self._size)
        if count == 0:
            return ()
        start = (self._pos - count) % self._buf.shape[0]
        if start + count <= self._buf.shape[0]:
            return (self._buf[start : start + count],)
        return (self._buf[start:], self._buf[: self._pos])

    def clear(self) -> None:
        self._pos = self._size = 0


class Recording:
    """An append-only buffer for one utterance whose read-only views stay valid for good.

    Views handed out (streamed speech chunks, the finished utterance) may be read later on
    another thread by STT. So memory behind a view is never written again: growth moves to a
    new array, and a new utterance after views were taken starts in a fresh one. A candidate
    that never became speech handed out nothing, so its memory is simply reused.
    """

    def __init__(self, initial: int, limit: int) -> None:
        self._initial = max(1, min(initial, limit))
        self._limit = limit
        self._buf = np.empty(self._initial, dtype=np.int16)
        self._shared = False
        self.length = 0

    def start(self) -> None:
        if self._shared:
            self._buf = np.empty(self._initial, dtype=np.int16)
            self._shared = False
        self.length = 0

    def append(self, samples: npt.NDArray[np.int16]) -> None:
        end = self.length + samples.shape[0]
        if end > self._buf.shape[0]:
            grown = np.empty(max(end, min(2 * self._buf.shape[0], self._limit)), dtype=np.int16)
            grown[: self.length] = self._buf[: self.length]
            self._buf = grown
            self._shared = False
        self._buf[self.length : end] = samples
        self.length = end

    def view(self, start: int, stop: int) -> npt.NDArray[np.int16]:
        self._shared = True
        part = self._buf[start:stop]
        part.flags.writeable = False
        return part
