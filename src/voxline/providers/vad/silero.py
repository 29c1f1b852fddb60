"""Voice activity detection with Silero VAD v6 (the ONNX file shipped inside faster-whisper).

One `InferenceSession` per process (one intra-op thread: a 32 ms chunk costs ~0.1 ms, so more
threads only add contention) is shared by every caller; each `SileroStream` holds its own LSTM
state and the 64-sample context Silero expects in front of every 512 new samples. The call is
cheap enough to run inline on the audio path, so there is no thread hop.

Cross-stream batching is not done: at ~0.1 ms per chunk the per-stream call is already far below
the 20 ms frame budget, and batching would need a synchronisation point across sessions.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.providers.llm.base import ConfigurationError

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 512
CONTEXT_SAMPLES = 64
INSTALL_HINT = "pip install 'voxline[local]'"


class SileroStream:
    """Per-caller recurrent state; `process` takes exactly 512 samples of 16 kHz audio."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def process(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> float:
        if len(chunk) != CHUNK_SAMPLES:
            raise ValueError(f"Silero takes {CHUNK_SAMPLES} samples per chunk, got {len(chunk)}")
        audio = (
            chunk.astype(np.float32) / 32768.0
            if chunk.dtype == np.int16
            else chunk.astype(np.float32, copy=False)
        )
        window = np.concatenate([self._context, audio])[np.newaxis, :]
        prob, self._h, self._c = self._session.run(
            None, {"input": window, "h": self._h, "c": self._c}
        )
        self._context = audio[-CONTEXT_SAMPLES:].copy()
        return float(prob.reshape(-1)[0])


class SileroVAD:
    """The `VAD` protocol: a shared model and a cheap stream per caller."""

    label = "silero:v6"
    sample_rate = SAMPLE_RATE
    chunk_samples = CHUNK_SAMPLES

    def __init__(self, session: Any) -> None:
        self._session = session

    def stream(self) -> SileroStream:
        return SileroStream(self._session)


def model_path() -> Path:
    """The Silero v6 file inside the installed faster-whisper."""
    try:
        import faster_whisper
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigurationError(f"the local VAD (Silero) is missing: {INSTALL_HINT}") from None
    path = Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise ConfigurationError(f"the Silero VAD model {path} is missing: {INSTALL_HINT}")
    return path


_session: Any = None
_session_lock = threading.Lock()


def _shared_session() -> Any:
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            _session = onnxruntime.InferenceSession(
                str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
        return _session


def create_silero_vad() -> SileroVAD:
    """The `silero` provider; the first call loads the model (tens of milliseconds)."""
    return SileroVAD(_shared_session())
