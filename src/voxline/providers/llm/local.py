"""The embedded LLM (`local`): Qwen2.5-Coder-1.5B-Instruct served in-process by llama.cpp.

The model is loaded once per process and shared by every session (a `ModelWorker` per model
file). llama.cpp runs on that worker's single thread: requests queue on it in arrival order, so a
second session waits its turn instead of failing, and the event loop never blocks. Chunks are
handed back with `loop.call_soon_threadsafe`; when the consumer stops reading (barge-in, task
cancelled) the next chunk callback tells llama.cpp to stop, which frees the worker at once.

With tools, the reply is JSON constrained by a schema (see `local_tools`); without, plain text.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import structlog

from voxline.providers.llm.base import (
    ConfigurationError,
    LLMError,
    LLMEvent,
    LLMRequest,
    TextDelta,
    Usage,
)
from voxline.providers.llm.local_model import GGUF_NAME, INSTALL_HINT, ensure_gguf, part_paths
from voxline.providers.llm.local_tools import (
    ReplyParser,
    chat_messages,
    output_schema,
    tool_instructions,
)
from voxline.providers.local_runtime import ModelWorker, shared_worker
from voxline.settings import Settings

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
DEFAULT_MAX_TOKENS = 512
CONTEXT_TOKENS = 8192

log = structlog.get_logger(__name__)
Chunk = dict[str, Any]
_DONE = object()


def _load_server(path: Path) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = CONTEXT_TOKENS
    params.n_parallel = 1
    params.use_jinja = True
    params.cache_prompt = True
    params.warmup = False
    params.verbosity = -1
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        raise ConfigurationError(f"cannot load the local model {path}: {exc}") from exc
    log.info("local llm loaded", path=str(path))
    return server


def _chat(server: Any, body: dict[str, Any], on_chunk: Callable[[Chunk], bool]) -> None:
    server.handle_chat_completions(body, on_chunk)


def shared_engine(key: Path, locate: Callable[[], Path]) -> ModelWorker[Any]:
    """The process-wide llama.cpp server for a model file, loaded on first use."""
    return shared_worker("llm", key, lambda: _load_server(locate()))


class LocalLLM:
    """The `LLM` protocol over a shared model worker; cheap to create, one per session is fine."""

    def __init__(self, engine: ModelWorker[Any], label: str) -> None:
        self._engine = engine
        self.label = label

    def load(self) -> float:
        """Load the model now if needed (blocking); the seconds its load took."""
        return self._engine.load()

    async def warm(self, request: LLMRequest) -> None:
        """Evaluate the request's system prompt (and tool section) ahead of the first turn.

        llama.cpp keeps the evaluated prefix, so the first real reply only pays for the user's
        words; a cold prompt with tool schemas costs seconds on a small CPU.
        """
        system_only = LLMRequest(
            messages=[m for m in request.messages if m.role == "system"],
            tools=request.tools,
            tool_choice=request.tool_choice,
            max_tokens=1,
        )
        async for _ in self.stream(system_only):
            pass

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        body, parser = self._prepare(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def deliver(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()

        def on_chunk(chunk: Chunk) -> bool:
            if stop.is_set():
                return True
            deliver(chunk)
            return False

        future = self._engine.submit(_chat, body, on_chunk)
        future.add_done_callback(lambda _: deliver(_DONE))
        usage = Usage()
        try:
            while (chunk := await queue.get()) is not _DONE:
                _raise_if_error(chunk)
                for text in _content(chunk):
                    for event in parser.feed(text) if parser else [TextDelta(text)]:
                        yield event
                usage = _usage(chunk) or usage
            try:
                future.result()
            except ConfigurationError:
                raise
            except Exception as exc:
                raise LLMError(f"local model failed: {exc}", provider="local") from exc
            for event in parser.finish() if parser else []:
                yield event
            yield usage
        finally:
            stop.set()
            future.cancel()

    def _prepare(self, request: LLMRequest) -> tuple[dict[str, Any], ReplyParser | None]:
        tools = [] if request.tool_choice == "none" else list(request.tools)
        if request.tool_choice not in (None, "auto", "none", "required"):
            tools = [t for t in tools if t.name == request.tool_choice]
        # After tool results the model must speak: one round of calls per user turn keeps a
        # small model from calling the same tool again and again.
        answering = bool(request.messages) and request.messages[-1].role == "tool"
        body: dict[str, Any] = {
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            **request.options,
        }
        if not tools:
            body["messages"] = chat_messages(request.messages)
            if request.temperature is not None:
                body["temperature"] = request.temperature
            return body, None
        body["messages"] = chat_messages(
            request.messages, tool_instructions(tools, reply_only=answering)
        )
        schema_tools = [] if answering else tools
        allow_reply = request.tool_choice != "required" or not schema_tools
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "reply",
                "schema": output_schema(schema_tools, allow_reply=allow_reply),
            },
        }
        body["temperature"] = 0.0 if request.temperature is None else request.temperature
        return body, ReplyParser(tools)

    async def aclose(self) -> None:
        """Nothing to release per instance: the engine outlives sessions by design."""


def _raise_if_error(chunk: Chunk) -> None:
    error = chunk.get("error") or (chunk if "code" in chunk and "message" in chunk else None)
    if error:
        message = error.get("message", error) if isinstance(error, dict) else error
        raise LLMError(f"local model error: {message}", provider="local", retryable=False)


def _content(chunk: Chunk) -> list[str]:
    texts = []
    for choice in chunk.get("choices") or []:
        text = (choice.get("delta") or {}).get("content")
        if text:
            texts.append(text)
    return texts


def _usage(chunk: Chunk) -> Usage | None:
    usage = chunk.get("usage")
    if not usage:
        return None
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
    )


def _require_runtime() -> None:
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"the local LLM runtime (xllamacpp) is missing: {INSTALL_HINT}"
        ) from None


def create_local_llm(model: str | None, settings: Settings) -> LocalLLM:
    """The `local` / `local:MODEL` provider. MODEL is the default name or a path to a GGUF file.

    Presence is checked now, so a missing package fails at start-up with one actionable line;
    joining the parts and loading happen on first use, on the worker thread.
    """
    _require_runtime()
    if model in (None, "", DEFAULT_MODEL):
        part_paths()
        target = settings.cache_dir / "models" / GGUF_NAME
        engine = shared_engine(target, lambda: ensure_gguf(settings.cache_dir))
        return LocalLLM(engine, f"local:{DEFAULT_MODEL}")
    path = Path(model).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise ConfigurationError(
            f"unknown local model {model!r}: use 'local' ({DEFAULT_MODEL}) "
            "or 'local:/path/to/model.gguf'"
        )
    resolved = path.resolve()
    return LocalLLM(shared_engine(resolved, lambda: resolved), f"local:{path.stem}")
