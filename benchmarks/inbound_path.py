"""CPU cost of the inbound voice path per 20 ms telephony frame.

Feeds 8 kHz mu-law frames (what Twilio Media Streams sends) through mu-law decoding, the
8 -> 16 kHz stream resampler and the SpeechGate, stage by stage, and prints microseconds of CPU
per frame and the share of one core a listening caller costs. The gate runs once with a scripted
VAD (the cost of voxline's own code) and once with the real Silero model when it is installed.

    python benchmarks/inbound_path.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from voxline.audio.codecs import mulaw_decode, mulaw_encode
from voxline.audio.resample import StreamResampler
from voxline.audio.turn_taking import SpeechGate
from voxline.providers.llm.base import ConfigurationError
from voxline.providers.vad.base import VAD, VADStream

FRAME_SECONDS = 0.02
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law


class _CycleStream:
    """Alternates one second of speech and one of silence, at no cost of its own."""

    def __init__(self, chunk_samples: int) -> None:
        per_second = 16000 // chunk_samples
        self._pattern = [0.9] * per_second + [0.05] * per_second
        self._index = 0

    def process(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> float:
        self._index = (self._index + 1) % len(self._pattern)
        return self._pattern[self._index]

    def reset(self) -> None:
        self._index = 0


class CycleVAD:
    label = "scripted"
    sample_rate = 16000
    chunk_samples = 512

    def stream(self) -> VADStream:
        return _CycleStream(self.chunk_samples)


def caller_audio(seconds: float) -> list[bytes]:
    """Mu-law frames of noise bursts shaped like speech and pauses."""
    rng = np.random.default_rng(1)
    samples = int(seconds * 8000)
    envelope = (np.sin(np.arange(samples) * 2 * np.pi / 16000) > 0).astype(np.float64)
    pcm = (rng.standard_normal(samples) * 3000 * (0.05 + envelope)).astype(np.int16)
    payload = mulaw_encode(pcm)
    return [payload[i : i + FRAME_BYTES] for i in range(0, len(payload), FRAME_BYTES)]


def measure(frames: list[bytes], step: Callable[[bytes], object]) -> float:
    """CPU microseconds per frame (process time, so other load on the machine does not count)."""
    for payload in frames[:50]:  # warm-up: allocate buffers, fill the resampler
        step(payload)
    start = time.process_time()
    for payload in frames:
        step(payload)
    return (time.process_time() - start) / len(frames) * 1e6


def pipeline(vad: VAD | None) -> Callable[[bytes], object]:
    resampler = StreamResampler(8000, 16000)
    if vad is None:
        return lambda payload: resampler.process(mulaw_decode(payload))
    gate = SpeechGate(vad)
    return lambda payload: gate.push(resampler.process(mulaw_decode(payload)))


def load_silero() -> VAD | None:
    try:
        from voxline.providers.vad.silero import create_silero_vad

        return create_silero_vad()
    except (ImportError, ConfigurationError) as exc:
        print(f"(real Silero VAD not measured: {exc})")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="caller audio per stage")
    args = parser.parse_args()
    frames = caller_audio(args.seconds)
    stages: list[tuple[str, Callable[[bytes], object]]] = [
        ("mu-law decode", mulaw_decode),
        ("+ resample 8->16 kHz", pipeline(None)),
        ("+ SpeechGate, scripted VAD", pipeline(CycleVAD())),
    ]
    silero = load_silero()
    if silero is not None:
        stages.append(("+ SpeechGate, Silero VAD", pipeline(silero)))
    print(f"{len(frames)} frames of 20 ms ({args.seconds:g} s of caller audio) per stage\n")
    print(f"{'stage':<30} {'us/frame':>9} {'% of a core':>12}")
    for name, step in stages:
        micros = measure(frames, step)
        share = micros / (FRAME_SECONDS * 1e6) * 100
        print(f"{name:<30} {micros:>9.1f} {share:>11.3f}%")


if __name__ == "__main__":
    main()
