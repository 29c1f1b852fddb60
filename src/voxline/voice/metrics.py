"""Per-turn voice latency: where the time between the caller's last word and the bot's first goes.

Every stage is measured from the same instant, the end of the caller's speech (back-dated from
the moment the end of turn was decided by the trailing silence the gate waited for), on the
pipeline's clock. So the stages add up, a virtual clock makes them exact in tests, and
voice-to-voice is what the caller experiences: silence wait, STT, model, TTS and pacing together.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Any

STAGES = ("end_of_turn", "transcript", "llm_first_token", "first_audio", "voice_to_voice")


@dataclass
class TurnLatency:
    """Seconds from the end of the caller's speech to each milestone of the reply (None: the
    milestone was never reached, e.g. the reply was interrupted before any audio played)."""

    speech_end: float  # on the pipeline clock
    turn_id: str | None = None  # the user turn this reply answers
    text: str = ""
    end_of_turn: float | None = None  # the end-of-turn silence the gate waited for
    transcript: float | None = None  # final transcript ready
    llm_first_token: float | None = None  # first model output: a text delta or a tool call
    first_audio: float | None = None  # first TTS audio of the reply synthesised
    voice_to_voice: float | None = None  # first bot audio handed to the channel to play

    def reach(self, stage: str, now: float) -> bool:
        """Records `stage` at `now` unless already recorded; True if this call recorded it."""
        if getattr(self, stage) is not None:
            return False
        setattr(self, stage, max(0.0, now - self.speech_end))
        return True

    @property
    def complete(self) -> bool:
        return self.voice_to_voice is not None

    def milliseconds(self) -> dict[str, int | None]:
        """The stages as whole milliseconds, for logs and printing."""
        return {
            f"{stage}_ms": None if (value := getattr(self, stage)) is None else round(value * 1000)
            for stage in STAGES
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StageSummary:
    count: int
    p50: float
    p95: float
    max: float


@dataclass
class LatencySummary:
    """Each stage's distribution over a session's turns (stages no turn reached are left out)."""

    turns: int
    stages: dict[str, StageSummary] = field(default_factory=dict)

    def milliseconds(self) -> dict[str, dict[str, int]]:
        return {
            stage: {
                name.name: round(getattr(summary, name.name) * 1000)
                for name in fields(StageSummary)
                if name.name != "count"
            }
            | {"count": summary.count}
            for stage, summary in self.stages.items()
        }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; one value is its own percentile."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    index = min(max(round(q), 1), 99) - 1
    return cuts[index]


def summarize(turns: list[TurnLatency]) -> LatencySummary:
    summary = LatencySummary(turns=len(turns))
    for stage in STAGES:
        values = [v for t in turns if (v := getattr(t, stage)) is not None]
        if values:
            summary.stages[stage] = StageSummary(
                len(values), percentile(values, 50), percentile(values, 95), max(values)
            )
    return summary
