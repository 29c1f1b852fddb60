"""Caller audio for the end-to-end tests: espeak-ng speaking a line, framed with silence."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from voxline.audio import AudioFrame, read_wav

QUESTION = "What's the weather in Paris tomorrow?"


def espeak(text: str, folder: Path) -> AudioFrame:
    """`text` as espeak-ng says it (22.05 kHz mono), with 0.5 s of silence before and 1.5 s
    after, as a caller's recording would have; skips the test when espeak-ng is missing."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = folder / "espeak.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    voice = read_wav(path)
    rate = voice.sample_rate
    pcm = np.concatenate(
        [np.zeros(rate // 2, np.int16), voice.pcm, np.zeros(rate * 3 // 2, np.int16)]
    )
    return AudioFrame(pcm, rate)
