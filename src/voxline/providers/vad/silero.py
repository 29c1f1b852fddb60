"""Voice activity detection with Silero VAD v6 (the ONNX file shipped inside faster-whisper).

One `InferenceSession` per process (one intra-op thread: a 32 ms window costs well under a
millisecond, so more threads only add contention) is shared by every caller. Two kinds of stream
sit on it, each holding its caller's LSTM state and the 64-sample context Silero expects in front
of every 512 new samples:

- `SileroStream.process` answers inline: for a script, a test, one call.
- `SileroBatchStream.submit` answers through a callback, and the windows of many calls run as
  one inference (`batch.py`): on a server the VAD is most of a listening call's CPU, and a batch
  costs about half as much per window. A batch of `WORKER_FROM` windows or more runs on the
  scheduler's worker thread (ONNX Runtime releases the GIL), so the event loop keeps taking the
  other calls' frames meanwhile; smaller ones run inline at the next loop turn. With
  `GATHER_FROM` calls open or more, a batch also waits up to `GATHER` after its oldest window for
  the other calls' windows (their frames arrive spread over the frame period, so a loop turn
  alone holds few of them), and goes at once when it reaches `MAX_BATCH` windows.

The file's graph takes its first input dimension as a *sequence* of one stream's windows (the LSTM
runs across them, batch 1), so it cannot batch independent calls as shipped. At load the graph
is rewritten in memory (with the `onnx` package): the transpose in front of the LSTM puts the
windows on the LSTM's batch axis instead of its time axis, and the state inputs and outputs get a
free batch dimension. Nothing else changes; the same weights give the same probabilities (the
tests compare batched against one-at-a-time runs). Without `onnx` the shipped graph is used and
every stream answers inline.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from voxline.providers.llm.base import ConfigurationError
from voxline.providers.vad.batch import BatchStats, LoopSchedulers, asyncio_running_loop

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 512
CONTEXT_SAMPLES = 64
STATE = 128  # LSTM hidden size
MAX_PENDING = 32  # windows one batched stream may hold (1 s): past it the batch runs at once
GATHER = 0.004  # with GATHER_FROM calls open, a batch waits this long for more calls' windows
GATHER_FROM = 32  # (fewer calls: answered in the next loop turn; see batch.BatchScheduler)
MAX_BATCH = 64  # windows per inference: bigger gains ~2% per window and delays every answer
WORKER_FROM = 32  # batches this big (~2 ms) run on the worker thread; smaller ones inline: on
# one busy core a thread hand-off costs more than it frees (175 calls: p99 9.5 ms inline vs
# 12.5 ms with every batch of 8+ on the thread), but a burst must not hold the loop for long
INSTALL_HINT = "pip install 'voxline[local]'"
log = structlog.get_logger("voxline.vad")


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


class SileroBatchStream:
    """One caller's state for batched inference: `submit` queues a window, and `on_probability`
    is called with its speech probability once its batch has run (before `submit` returns when
    no event loop runs, or when this stream already holds `max_pending` windows).

    Windows are answered in order, one per inference. `reset` and `close` drop the windows
    still waiting, unanswered, and the answer of one being computed, so a gate that forgot its
    audio never hears about it again.
    """

    def __init__(
        self,
        model: SileroVAD,
        on_probability: Callable[[float], None],
        max_pending: int = MAX_PENDING,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._model = model
        self._on_probability = on_probability
        self.max_pending = max_pending
        self._windows: deque[npt.NDArray[np.float32]] = deque()
        self.computing = 0  # windows taken into a batch and not answered yet (0 or 1)
        self._scheduler = model.schedulers.current()
        self._scheduler.attach(self)
        self.epoch = 0  # bumped by reset/close: answers computed before it are not delivered
        self.closed = False
        self.h = np.zeros((1, 1, STATE), dtype=np.float32)
        self.c = np.zeros((1, 1, STATE), dtype=np.float32)
        self._context: npt.NDArray[np.float32] = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    @property
    def queued(self) -> int:
        """Windows waiting for a batch."""
        return len(self._windows)

    @property
    def pending(self) -> int:
        """Windows submitted and not answered yet (waiting, or in a batch being computed)."""
        return len(self._windows) + self.computing

    def submit(self, chunk: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> None:
        if self.closed:
            raise RuntimeError("the VAD stream is closed")
        if len(chunk) != CHUNK_SAMPLES:
            raise ValueError(f"Silero takes {CHUNK_SAMPLES} samples per chunk, got {len(chunk)}")
        scheduler = self._scheduler
        if scheduler.closed:  # its batch in flight, if any, will never answer
            raise RuntimeError("the VAD model was closed under this stream")
        if scheduler.loop is not asyncio_running_loop():  # first window on this loop
            scheduler.detach(self)
            scheduler = self._scheduler = self._model.schedulers.current()
            scheduler.attach(self)
        if len(self._windows) >= self.max_pending:
            scheduler.stats.overflows += 1
            scheduler.run()  # bounded: answer what waits now rather than drop audio
        window = np.empty(CONTEXT_SAMPLES + CHUNK_SAMPLES, dtype=np.float32)
        window[:CONTEXT_SAMPLES] = self._context
        if chunk.dtype == np.int16:
            np.multiply(chunk, 1.0 / 32768.0, out=window[CONTEXT_SAMPLES:], casting="unsafe")
        else:
            window[CONTEXT_SAMPLES:] = chunk
        self._context = window[-CONTEXT_SAMPLES:]
        self._windows.append(window)
        scheduler.ready(self)

    def settle(self) -> None:
        """Answers every window still waiting (this stream's and the others'), now."""
        if self.pending:
            self._scheduler.run()

    def reset(self) -> None:
        """Fresh recurrent state and context; windows still waiting are dropped unanswered."""
        self.epoch += 1
        self._windows.clear()
        self.computing = 0
        self._scheduler.discard(self)
        self.h = np.zeros((1, 1, STATE), dtype=np.float32)
        self.c = np.zeros((1, 1, STATE), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def close(self) -> None:
        """The caller left: nothing more is answered, even from a batch already running."""
        self.reset()
        self._scheduler.detach(self)
        self.closed = True

    def take(self) -> npt.NDArray[np.float32]:
        """The oldest waiting window (for the batch being built)."""
        self.computing += 1
        return self._windows.popleft()

    def deliver(self, probability: float) -> None:
        self.computing -= 1
        self._on_probability(probability)


class SileroBatch:
    """One inference over one window of each of `streams`: built on the loop (`take`s the
    windows, gathers the states), computed anywhere (only `session.run`), finished on the loop
    (stores the states and delivers the answers of the streams not reset meanwhile)."""

    __slots__ = ("_session", "c", "epochs", "error", "h", "inputs", "outputs", "streams")

    def __init__(self, session: Any, streams: list[SileroBatchStream]) -> None:
        self._session = session
        self.streams = streams
        self.epochs = [stream.epoch for stream in streams]
        if len(streams) == 1:
            only = streams[0]
            self.inputs = only.take()[np.newaxis, :]
            self.h, self.c = only.h, only.c
        else:
            self.inputs = np.stack([stream.take() for stream in streams])
            self.h = np.concatenate([stream.h for stream in streams], axis=1)
            self.c = np.concatenate([stream.c for stream in streams], axis=1)
        self.outputs: tuple[Any, Any, Any] | None = None
        self.error: Exception | None = None

    def compute(self) -> None:
        try:
            probabilities, hn, cn = self._session.run(
                None, {"input": self.inputs, "h": self.h, "c": self.c}
            )
            self.outputs = (probabilities, hn, cn)
        except Exception as exc:  # logged on the loop, in finish
            self.error = exc

    def finish(self) -> None:
        streams, epochs = self.streams, self.epochs
        if self.outputs is None:
            # Each gate waits for one answer per window in order: a missing one would pair
            # every later window with the wrong probability. Silence keeps them in step.
            log.error("Silero batch failed; its windows count as silence", error=repr(self.error))
            self.outputs = (np.zeros(len(streams), dtype=np.float32), self.h, self.c)
        probabilities, hn, cn = self.outputs
        probabilities = probabilities.reshape(-1)
        # States first, then answers: a callback that resets another stream of this batch
        # (its epoch moves on) must not have that reset overwritten or answered afterwards.
        # A stream reset while the batch computed keeps its fresh state.
        for index, stream in enumerate(streams):
            if stream.epoch == epochs[index]:
                stream.h = hn[:, index : index + 1]
                stream.c = cn[:, index : index + 1]
        # One call's failing handler must not cost the others their answers.
        for index, stream in enumerate(streams):
            if stream.epoch == epochs[index]:
                try:
                    stream.deliver(float(probabilities[index]))
                except Exception:
                    log.exception("a VAD answer's handler failed")


class SileroVAD:
    """The `VAD` protocol: a shared model and a cheap stream per caller; `batched_stream` for
    callers that can take the answer a loop turn later (see the module doc)."""

    label = "silero:v6"
    sample_rate = SAMPLE_RATE
    chunk_samples = CHUNK_SAMPLES

    def __init__(
        self,
        session: Any,
        *,
        batchable: bool = True,
        max_batch: int = MAX_BATCH,
        gather: float = GATHER,
        gather_from: int = GATHER_FROM,
        worker_from: int = WORKER_FROM,
    ) -> None:
        self._session = session
        self.batchable = batchable
        self.schedulers: LoopSchedulers[SileroBatchStream] = LoopSchedulers(
            self._prepare,
            max_batch=max_batch,
            gather=gather,
            gather_from=gather_from,
            worker_from=worker_from,
        )

    def stream(self) -> SileroStream:
        return SileroStream(self._session)

    def batched_stream(
        self, on_probability: Callable[[float], None], *, max_pending: int = MAX_PENDING
    ) -> SileroBatchStream | None:
        """A stream answered through `on_probability`, batched with the other calls' windows;
        None when the loaded graph cannot batch (no `onnx` package)."""
        if not self.batchable:
            return None
        return SileroBatchStream(self, on_probability, max_pending)

    def batch_stats(self) -> BatchStats:
        """The running loop's batching statistics."""
        return self.schedulers.stats()

    def close(self) -> None:
        """Stops the batching worker threads (a batch in flight finishes, undelivered). Streams
        still open can submit no more (their answers would be lost); new ones start afresh."""
        self.schedulers.close()

    def _prepare(self, streams: list[SileroBatchStream]) -> SileroBatch:
        return SileroBatch(self._session, streams)


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


_session: tuple[Any, bool] | None = None
_session_lock = threading.Lock()


def batched_graph(path: Path) -> bytes | None:
    """The model with independent streams on the LSTM's batch axis (see the module doc), as
    serialized ONNX; None without the `onnx` package or when the graph is not the expected one."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path))
    graph = model.graph
    transposes = [node for node in graph.node if node.op_type == "Transpose"]
    lstm = [node for node in graph.node if node.op_type == "LSTM"]
    if not transposes or len(lstm) != 1 or lstm[0].input[0] != transposes[0].output[0]:
        return None
    for attribute in transposes[0].attribute:
        if attribute.name == "perm" and list(attribute.ints) == [0, 2, 1]:
            # encoder output [windows, 128, 1] -> [1, windows, 128]: time 1, batch = windows
            attribute.ints[:] = [2, 0, 1]
            break
    else:
        return None
    for value in [*graph.input, *graph.output]:
        if value.name in ("h", "c", "hn", "cn"):
            dim = value.type.tensor_type.shape.dim[1]
            dim.ClearField("dim_value")
            dim.dim_param = "batch"
    graph.ClearField("value_info")  # shapes inferred for the old layout; ORT infers anew
    return bytes(model.SerializeToString())


def _shared_session() -> tuple[Any, bool]:
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            path = model_path()
            graph = batched_graph(path)
            if graph is None:
                log.warning("Silero VAD runs unbatched: the onnx package is missing")
            session = onnxruntime.InferenceSession(
                graph if graph is not None else str(path),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
            _session = (session, graph is not None)
        return _session


def create_silero_vad() -> SileroVAD:
    """The `silero` provider; the first call loads the model (tens of milliseconds)."""
    session, batchable = _shared_session()
    return SileroVAD(session, batchable=batchable)
