"""A stand-in for the local model's worker that answers with scripted llama.cpp output."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class ScriptedEngine:
    """Stands in for the model worker: records each completion body and answers with the
    next scripted output, chunk by chunk, as llama.cpp's completion stream does."""

    def __init__(self, outputs: list[list[str]]) -> None:
        self.outputs = outputs
        self.bodies: list[dict[str, Any]] = []

    def submit(self, fn: Callable[..., None], body: dict[str, Any], on_chunk: Any) -> Future[None]:
        self.bodies.append(body)
        for piece in self.outputs.pop(0):
            on_chunk({"choices": [{"text": piece}]})
        on_chunk({"choices": [{"text": ""}], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})
        done: Future[None] = Future()
        done.set_result(None)
        return done
