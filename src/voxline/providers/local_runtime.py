"""Heavy local models, loaded once per process and run on one dedicated thread each.

Sessions share a model instead of loading their own, and CPU-bound inference must stay off the
event loop. A `ModelWorker` owns one model and one thread: the model is loaded lazily on that
thread, calls queue in arrival order (a second session waits its turn rather than competing for
two cores), and both asyncio callers and plain threads can use it. Workers live in a process-wide
registry keyed by model file, so every provider instance for the same file shares one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, ParamSpec, TypeVar

M = TypeVar("M")
R = TypeVar("R")
P = ParamSpec("P")


class ModelWorker(Generic[M]):
    """One lazily loaded model and the single thread that runs it."""

    def __init__(self, name: str, loader: Callable[[], M]) -> None:
        self._loader = loader
        self._model: M | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"voxline-{name}"
        )
        self.load_seconds: float | None = None

    def submit(self, fn: Callable[..., R], *args: Any) -> concurrent.futures.Future[R]:
        """Queue `fn(model, *args)` on the model's thread."""
        return self._thread.submit(self._call, fn, *args)

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Await `fn(model, *args)`; cancelling the caller drops it if it has not started."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def load(self) -> float:
        """Block until the model is loaded; the seconds the load took (whenever it happened)."""
        self._thread.submit(self._loaded).result()
        return self.load_seconds or 0.0

    def _call(self, fn: Callable[..., R], *args: Any) -> R:
        return fn(self._loaded(), *args)

    def _loaded(self) -> M:
        if self._model is None:
            started = time.perf_counter()
            self._model = self._loader()
            self.load_seconds = time.perf_counter() - started
        return self._model


_workers: dict[tuple[str, Hashable], ModelWorker[Any]] = {}
_workers_lock = threading.Lock()


def shared_worker(name: str, key: Hashable, loader: Callable[[], M]) -> ModelWorker[M]:
    """The process-wide worker for (`name`, `key`), created on first use."""
    with _workers_lock:
        worker = _workers.get((name, key))
        if worker is None:
            worker = _workers[(name, key)] = ModelWorker(name, loader)
        return worker
