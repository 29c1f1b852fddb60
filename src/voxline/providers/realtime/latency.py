"""End of the caller's speech → the model's first audio, per turn, for a Realtime session.

The server says where the caller stopped speaking as a position in the audio it was sent
(`speech_stopped.audio_end_ms`), decided after its own silence wait. Remembering when each piece
of caller audio left here turns that position back into a moment on our clock, so the figure is
what the caller lives through (the server's silence wait, the model, the network), measured the
way the cascaded pipeline measures it (`voxline.voice.metrics`), and the two compare directly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from voxline.providers.realtime.config import AudioFormat
from voxline.voice.metrics import TurnLatency

_WINDOW = 3000  # sent-audio timings kept (a minute of 20 ms chunks)


class LatencyTracker:
    """One probe per caller turn; `report` gets each when it is complete or abandoned."""

    def __init__(
        self, audio: AudioFormat, report: Callable[[TurnLatency], None], clock: Callable[[], float]
    ) -> None:
        self._audio = audio
        self._report = report
        self._clock = clock
        self._sent: deque[tuple[int, float]] = deque(maxlen=_WINDOW)  # (end ms, when sent)
        self._bytes = 0
        self.probe: TurnLatency | None = None
        self.latencies: list[TurnLatency] = []

    def sent(self, size: int) -> None:
        """`size` bytes of caller audio left now."""
        self._bytes += size
        self._sent.append((self._audio.ms(self._bytes), self._clock()))

    def reset(self) -> None:
        """A new connection counts its input audio from zero."""
        self._sent.clear()
        self._bytes = 0

    def speech_stopped(self, audio_end_ms: int, fallback_wait: float) -> None:
        """The server decided the caller's turn ended at `audio_end_ms` (`fallback_wait`:
        seconds of silence it waits, for when that position is not known here)."""
        now = self._clock()
        end = next((at for end_ms, at in self._sent if end_ms >= audio_end_ms), None)
        self.retire()
        self.probe = TurnLatency(speech_end=end if end is not None else now - fallback_wait)
        self.probe.reach("end_of_turn", now)

    def user_turn(self, turn_id: str) -> None:
        if self.probe is not None and self.probe.turn_id is None:
            self.probe.turn_id = turn_id

    def reach(self, stage: str, turn_id: str | None = None) -> None:
        """Record `stage` now (only for `turn_id`'s probe, when given)."""
        probe = self.probe
        if probe is not None and (turn_id is None or probe.turn_id == turn_id):
            probe.reach(stage, self._clock())

    def first_audio(self) -> None:
        """The answer's first audio arrived and went to the channel: the turn is measured."""
        if self.probe is None:
            return
        for stage in ("llm_first_token", "first_audio", "voice_to_voice"):
            self.reach(stage)
        self.retire()

    def retire(self) -> None:
        """Report the probe as it stands (an interrupted or unanswered turn too)."""
        probe, self.probe = self.probe, None
        if probe is not None:
            self.latencies.append(probe)
            self._report(probe)
