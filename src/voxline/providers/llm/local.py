"""The embedded LLM (`local`): Qwen2.5-Coder-1.5B-Instruct served in-process by llama.cpp.

The model is loaded once per process and shared by every session (a `ModelWorker` per model
file). llama.cpp runs on that worker's single thread: requests queue on it in arrival order, so a
second session waits its turn instead of failing, and the event loop never blocks. Chunks are
handed back with `loop.call_soon_threadsafe`; when the consumer stops reading (barge-in, task
cancelled) the next chunk callback tells llama.cpp to stop, which frees the worker at once.

The prompt is rendered here in the model's own chat format (`local_tools.render_prompt`) and
sent as a raw completion, so what is cached is exactly what was sent: a step of a turn only
appends to the prompt of the step before. With tools, a step that may speak runs without a
grammar and streams speech at once; a call it opens is written in short constrained steps
after it on the same prompt, its name announced before its arguments (see `local_tools`).

The call's events: `ToolCallDelta(index=0, id, name, arguments="")` as soon as the name is
chosen, when the caller's words are about that tool and no tool has answered yet this turn (a
voice channel can say a filler while the arguments are written); then either
`ToolCallDelta(index=0, arguments=JSON)` once they pass the checks, or
`ToolCallDelta(index=0, withdrawn=True)` and the spoken answer when they do not (an invented
value becomes a question), so a named call that is not made never runs. Any other call comes
as one complete `ToolCallDelta`, or not at all.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import structlog

from voxline.providers.llm.base import (
    ChatMessage,
    ConfigurationError,
    LLMError,
    LLMEvent,
    LLMRequest,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
    ToolDefinition,
    Usage,
)
from voxline.providers.llm.local_model import GGUF_NAME, INSTALL_HINT, ensure_gguf, part_paths
from voxline.providers.llm.local_tools import (
    CALL_OPENING,
    StepParser,
    about_caller,
    arguments_grammar,
    arguments_opening,
    has_results,
    may_hold_value,
    name_grammar,
    new_call_id,
    nothing_new_for,
    parse_arguments,
    render_prompt,
    review_call,
    runaway,
    speech_grammar,
)
from voxline.providers.local_runtime import ModelWorker, shared_worker
from voxline.settings import Settings

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
DEFAULT_MAX_TOKENS = 512
NAME_TOKENS = 16  # a tool name and its closing quote
# A call's arguments object (the six benchmark tools need at most ~25 tokens); an invented
# value can run on without end, and the cap is what stops it (see `parse_arguments`).
ARGUMENT_TOKENS = 48
CONTEXT_TOKENS = 8192
# Logit bias on the first token of a call. Qwen2.5-Coder-1.5B, told when not to call, prefers
# words even for clear requests (first-token margins measured on the dev set: -1 to -5 for
# requests needing a tool, -2.5 and below for small talk); the bias moves the boundary, and
# `review_call` catches what it lets through with invented values. On 20 dev-set requests
# (`benchmarks/tool_precision.py --limit 5`) 5.0 raised call recall from 43% to 79% and
# two-step success from 0/5 to 3/5 against 3.5, with no call on any of the 10 requests needing
# none (and none on all 24 small-talk, statement and knowledge requests).
CALL_BIAS = 5.0
ANSWERED_NOTE = "The results above answer the user. Tell the user what they say."

log = structlog.get_logger(__name__)
Chunk = dict[str, Any]
_DONE = object()


def _load_server(path: Path, threads: int | None = None) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    if threads:  # llama.cpp's default is every core; on a busy machine fewer decode faster
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
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


def _complete(server: Any, body: dict[str, Any], on_chunk: Callable[[Chunk], bool]) -> None:
    server.handle_completions(body, on_chunk)


def shared_engine(
    key: Path, locate: Callable[[], Path], threads: int | None = None
) -> ModelWorker[Any]:
    """The process-wide llama.cpp server for a model file, loaded on first use (the first
    caller's `threads` wins)."""
    return shared_worker("llm", key, lambda: _load_server(locate(), threads))


class LocalLLM:
    """The `LLM` protocol over a shared model worker; cheap to create, one per session is fine."""

    def __init__(self, engine: ModelWorker[Any], label: str) -> None:
        self._engine = engine
        self.label = label
        self.last_decision: float | None = None  # request start -> first generated token, s
        self.call_bias = CALL_BIAS
        self._usage = Usage()  # the last constrained step's, reported with the call

    def load(self) -> float:
        """Load the model now if needed (blocking); the seconds its load took."""
        return self._engine.load()

    async def warm(self, request: LLMRequest) -> None:
        """Evaluate the request's system prompt (and tool section) ahead of the first turn.

        llama.cpp keeps the evaluated prefix, so the first real reply only pays for the user's
        words; a cold prompt with tool schemas costs seconds on a small CPU. With tools the
        token is sampled under a grammar: llguidance builds its view of the 151k-token
        vocabulary on first use in the process (0.7 s on 2 cores), and a call's first
        constrained step should not pay for it.
        """
        system = [m for m in request.messages if m.role == "system"]
        grammar = speech_grammar() if request.tools else None
        body = self._body(
            LLMRequest(system, max_tokens=1), render_prompt(system, request.tools), grammar
        )
        async for _ in self._generate(body, StepParser(speech_only=True), None):
            pass

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        started = time.monotonic()
        self.last_decision = None
        tools = _offered(request)
        speak = request.tool_choice != "required" and not _named(request)
        # Every tool stays in the system message whatever `tool_choice` says, so the cached
        # prefix is the same for every step; what a step may write is narrowed after it.
        prompt = render_prompt(request.messages, request.tools)
        if not request.tools or request.tool_choice == "none" or not tools:
            grammar = speech_grammar() if request.tools else None  # a grammar forbids a call
            body = self._body(request, prompt, grammar)
            async for event in self._generate(body, StepParser(speech_only=not grammar), started):
                yield event
            return
        if speak and all(nothing_new_for(tool, request.messages) for tool in tools):
            # Every tool has answered all the caller asked of it this turn: a call could only
            # repeat one (the biased first token opened such repeats after every result), so
            # this step is the answer, steered to the results by a note after the cached prefix.
            async for event in self._speak(request, ANSWERED_NOTE, "(every tool answered)"):
                yield event
            return
        if speak:
            body = self._body(request, prompt, None)
            # Greedy, as the constrained steps are: the call bias was tuned that way.
            body["temperature"] = 0.0 if request.temperature is None else request.temperature
            if self.call_bias:
                # A call's first tokens; speech never holds "{" (the parser stops on it), so
                # this moves only the speak-or-call boundary (see CALL_BIAS).
                body.setdefault("logit_bias", [["{", self.call_bias], ['{"', self.call_bias]])
            parser = StepParser()
            async for event in self._generate(body, parser, started):
                yield event
            if parser.kind != "call":
                return
        async for event in self._call(request, prompt, tools, speak, started):
            yield event

    async def _call(
        self,
        request: LLMRequest,
        prompt: str,
        tools: list[ToolDefinition],
        speak: bool,
        started: float,
    ) -> AsyncIterator[LLMEvent]:
        """The model opened a call: choose the tool, check the caller's words are about it,
        announce it, write its arguments, and make it or speak instead."""
        tool = tools[0]
        if len(tools) > 1:
            body = self._body(request, prompt + CALL_OPENING, name_grammar(tools), NAME_TOKENS)
            name = "".join([t async for t in self._texts(body, started)]).split('"')[0]
            tool = next((t for t in tools if t.name == name), tool)
        about = not speak or about_caller(tool, request.messages)
        if speak and nothing_new_for(tool, request.messages):
            # The same tool again with nothing the caller said left to ask it: the call could
            # only repeat one whose result is above, so it is not written (its arguments and
            # the review that would refuse them cost a second on 2 cores).
            note = f"{tool.name} already answered. Tell the user what its result above says."
            async for event in self._speak(request, note, tool.name):
                yield event
            return
        if not about and has_results(request.messages):
            # A further step reaching for a tool the caller did not ask about: the request is
            # answered by what the earlier steps found.
            note = f"{tool.name} is not needed. Tell the user what the results above say."
            async for event in self._speak(request, note, tool.name):
                yield event
            return
        if not about and not may_hold_value(request.messages):
            # Nothing the caller said could be its values ("Hello, how are you?"): the call
            # could only invent them, so the model answers without writing them.
            async for event in self._speak(request, "", tool.name):
                yield event
            return
        call_id = new_call_id()
        # Announced before its arguments only while the turn is still silent of results:
        # that is when a voice channel's filler is said (once per reply); a later step's call
        # (a second tool, a repeat the review stops) comes whole or not at all.
        early = about and not has_results(request.messages)
        if early:
            yield ToolCallDelta(index=0, id=call_id, name=tool.name)
        opened = prompt + arguments_opening(tool.name)
        body = self._body(request, opened, arguments_grammar(tool), ARGUMENT_TOKENS)
        raw = ""
        async with aclosing(self._texts(body, started)) as texts:  # closed: llama.cpp stops
            async for text in texts:
                raw += text
                if runaway(raw):  # an invented value that never ends: stop writing it now
                    break
        parsed = parse_arguments(raw)
        if parsed is None:
            log.info("local tool arguments cut off", tool=tool.name, written=raw[:80])
        arguments = json.dumps(parsed or {})
        verdict = review_call(
            ToolCallRequest(call_id, tool.name, arguments), tool, request.messages
        )
        if verdict.call is not None:
            if early:
                yield ToolCallDelta(index=0, arguments=verdict.call.arguments)
            else:
                yield ToolCallDelta(0, call_id, tool.name, verdict.call.arguments)
            yield self._usage
            return
        if early:
            yield ToolCallDelta(index=0, withdrawn=True)
        async for event in self._speak(request, verdict.note, tool.name):
            yield event

    async def _speak(self, request: LLMRequest, note: str, tool: str) -> AsyncIterator[LLMEvent]:
        """The call is not made: the model speaks on the same prompt, after `note` (a system
        message appended at its very end, so the cached prefix is kept) when there is one."""
        log.info("local tool call replaced by speech", tool=tool, note=note)
        noted = list(request.messages)
        if note:
            noted.append(ChatMessage(role="system", content=note))
        body = self._body(request, render_prompt(noted, request.tools), speech_grammar())
        async for event in self._generate(body, StepParser(), None):
            yield event

    async def _texts(self, body: dict[str, Any], started: float) -> AsyncGenerator[str]:
        """The raw text of a constrained step of a call (nothing of it is spoken); its usage
        is kept for the call's `Usage` event."""
        parser = StepParser(speech_only=True)
        async for event in self._generate(body, parser, started):
            if isinstance(event, TextDelta):
                yield event.text
            elif isinstance(event, Usage):
                self._usage = event

    def _body(
        self, request: LLMRequest, prompt: str, grammar: str | None, tokens: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": prompt,
            "stream": True,
            "cache_prompt": True,
            "n_predict": tokens or request.max_tokens or DEFAULT_MAX_TOKENS,
            **request.options,
        }
        if grammar is not None:
            body["grammar"] = grammar
            body["temperature"] = 0.0 if request.temperature is None else request.temperature
        elif request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    async def _generate(
        self, body: dict[str, Any], parser: StepParser, started: float | None
    ) -> AsyncIterator[LLMEvent]:
        """Run one completion on the worker; speech comes out as it is generated, and the
        usage last. `started` (when given) times the first generated token as the decision."""
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

        future = self._engine.submit(_complete, body, on_chunk)
        future.add_done_callback(lambda _: deliver(_DONE))
        usage = Usage()
        try:
            while (chunk := await queue.get()) is not _DONE:
                _raise_if_error(chunk)
                for text in _content(chunk):
                    if started is not None and self.last_decision is None:
                        self.last_decision = time.monotonic() - started
                    for event in parser.feed(text):
                        yield event
                if parser.done:  # the rest would be a call or markup: stop llama.cpp now
                    return
                usage = _usage(chunk) or usage
            try:
                future.result()
            except ConfigurationError:
                raise
            except Exception as exc:
                raise LLMError(f"local model failed: {exc}", provider="local") from exc
            yield usage
        finally:
            stop.set()
            future.cancel()

    async def aclose(self) -> None:
        """Nothing to release per instance: the engine outlives sessions by design."""


def _offered(request: LLMRequest) -> list[ToolDefinition]:
    """The tools this step may call: all of them, or the one `tool_choice` names."""
    if _named(request):
        return [tool for tool in request.tools if tool.name == request.tool_choice]
    return list(request.tools)


def _named(request: LLMRequest) -> bool:
    return request.tool_choice not in (None, "auto", "none", "required")


def _raise_if_error(chunk: Chunk) -> None:
    error = chunk.get("error") or (chunk if "code" in chunk and "message" in chunk else None)
    if error:
        message = error.get("message", error) if isinstance(error, dict) else error
        raise LLMError(f"local model error: {message}", provider="local", retryable=False)


def _content(chunk: Chunk) -> list[str]:
    texts = []
    for choice in chunk.get("choices") or []:
        text = choice.get("text")
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


def create_local_llm(
    model: str | None, settings: Settings, *, threads: int | None = None
) -> LocalLLM:
    """The `local` / `local:MODEL` provider. MODEL is the default name or a path to a GGUF file.

    Presence is checked now, so a missing package fails at start-up with one actionable line;
    joining the parts and loading happen on first use, on the worker thread.
    """
    _require_runtime()
    if model in (None, "", DEFAULT_MODEL):
        part_paths()
        target = settings.cache_dir / "models" / GGUF_NAME
        engine = shared_engine(target, lambda: ensure_gguf(settings.cache_dir), threads)
        return LocalLLM(engine, f"local:{DEFAULT_MODEL}")
    path = Path(model).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise ConfigurationError(
            f"unknown local model {model!r}: use 'local' ({DEFAULT_MODEL}) "
            "or 'local:/path/to/model.gguf'"
        )
    resolved = path.resolve()
    return LocalLLM(shared_engine(resolved, lambda: resolved, threads), f"local:{path.stem}")
