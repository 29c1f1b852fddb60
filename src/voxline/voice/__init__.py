"""The voice pipeline: a Session heard and spoken through an audio channel.

`VoicePipeline` attaches a `Session` (created with `auto_deliver=False`) to anything that
implements `AudioTransport`; `TurnLatency` records arrive as `metrics(kind="turn")` events.
"""

from voxline.voice.interruption import InterruptionPolicy, Verdict
from voxline.voice.metrics import LatencySummary, StageSummary, TurnLatency, summarize
from voxline.voice.pipeline import VoiceOptions, VoicePipeline
from voxline.voice.transport import AudioTransport

__all__ = [
    "AudioTransport",
    "InterruptionPolicy",
    "LatencySummary",
    "StageSummary",
    "TurnLatency",
    "Verdict",
    "VoiceOptions",
    "VoicePipeline",
    "summarize",
]
