"""Audio primitives and turn taking for the voice pipeline.

Everything here is synchronous and allocation-conscious on purpose: one inbound 20 ms frame is a
handful of function calls (decode, resample, VAD gate), never a task or a queue hop. Only the
outbound pacer awaits, because it has to wait for real time.
"""

from voxline.audio.clock import Clock, MonotonicClock, VirtualClock, sleep_until
from voxline.audio.codecs import (
    AudioFormatError,
    mulaw_decode,
    mulaw_encode,
    pcm16_from_bytes,
    pcm16_to_bytes,
)
from voxline.audio.end_of_turn import EndOfTurnStrategy, SilenceEndOfTurn, TranscriptEndOfTurn
from voxline.audio.frames import AudioFrame
from voxline.audio.pacing import Pacer
from voxline.audio.playback import PlaybackTracker
from voxline.audio.resample import StreamResampler, resample
from voxline.audio.turn_taking import (
    GateEvent,
    GateState,
    SpeechChunk,
    SpeechEnded,
    SpeechGate,
    SpeechStarted,
    TurnOptions,
)
from voxline.audio.wav import read_wav, write_wav

__all__ = [
    "AudioFormatError",
    "AudioFrame",
    "Clock",
    "EndOfTurnStrategy",
    "GateEvent",
    "GateState",
    "MonotonicClock",
    "Pacer",
    "PlaybackTracker",
    "SilenceEndOfTurn",
    "SpeechChunk",
    "SpeechEnded",
    "SpeechGate",
    "SpeechStarted",
    "StreamResampler",
    "TranscriptEndOfTurn",
    "TurnOptions",
    "VirtualClock",
    "mulaw_decode",
    "mulaw_encode",
    "pcm16_from_bytes",
    "pcm16_to_bytes",
    "read_wav",
    "resample",
    "sleep_until",
    "write_wav",
]
