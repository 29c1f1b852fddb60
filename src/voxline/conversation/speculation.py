"""Speculative replies: the model starts on what the caller has probably said, before the turn ends.

A voice turn ends only after a stretch of silence (0.6 s by default), and the words of the turn
are usually known before that: the listener transcribes the speech so far at the first short
pause. Starting the model on those words then hides its time to first token inside a wait the
caller has to sit through anyway.

The hard part is that nothing of a guess may leak. So a `SpeculativeReply` is only a model
stream read into a bounded buffer: no user turn is added, no bot turn written, no event emitted,
no tool run (a tool call the model writes is a buffered delta like any other; tools run only
after the reply is committed, by the engine, as for any reply). When the turn ends the session
either *commits* it (`Session.send_text(text, speculation=...)`): the user turn is recorded as
usual and the engine's first model request is served from the buffer, then from the still
running stream; or the guess is *cancelled*: the stream is closed, which stops the model (the
local model's worker stops at its next token).

Whether the buffer may serve a request is decided by comparing the request itself, not only the
words: the engine's first request must equal the one the guess was made with (same history,
instructions, tools and settings), except that the caller's last words need only match after
`normalize`. Anything else (a summary written in between, a tool result recorded, another
connection's turn becoming visible, a guardrail answering instead of the model) sends the
request to the model as usual and cancels the guess, so a wrong guess costs model time, never a
wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Literal

import structlog

from voxline.providers.llm.base import LLM, LLMEvent, LLMRequest
from voxline.tasks import TaskGroup

log = structlog.get_logger("voxline.speculation")

MAX_HELD_EVENTS = 256
"""Model events a guess buffers before it stops reading (the model then waits, as a slow reader
makes it wait): a few sentences, far more than the end-of-turn wait produces on any model."""

_SPACE = re.compile(r"\s+")

Outcome = Literal["running", "kept", "cancelled"]


def normalize(text: str) -> str:
    """The words of a transcript without case, punctuation or spacing differences: "What's the
    weather?" and "what's the weather" are the same caller turn."""
    kept = "".join(
        " " if unicodedata.category(ch).startswith("P") and ch not in "'’" else ch
        for ch in text.lower()
    )
    return _SPACE.sub(" ", kept.replace("’", "'")).strip()


@dataclass(frozen=True, slots=True)
class _End:
    """The guessed stream finished (with `error` when it failed)."""

    error: Exception | None = None


class SpeculativeReply:
    """One guess: the model's stream for `request` (whose last message is the guessed user turn),
    read in the background into a bounded buffer owned by `tasks`."""

    def __init__(
        self,
        llm: LLM,
        request: LLMRequest,
        text: str,
        tasks: TaskGroup,
        *,
        max_held: int = MAX_HELD_EVENTS,
    ) -> None:
        self.text = text
        self.request = request
        self.outcome: Outcome = "running"
        self.failed: Exception | None = None  # the stream failed before anyone used it
        self._llm = llm
        self._held: asyncio.Queue[LLMEvent | _End] = asyncio.Queue(max_held)
        self._task = tasks.spawn(self._generate(), name="speculative reply")

    # -- deciding ----------------------------------------------------------------------------
    def matches(self, text: str) -> bool:
        """The final transcript is the guessed one (after `normalize`)."""
        return normalize(text) == normalize(self.text)

    def answers(self, request: LLMRequest) -> bool:
        """`request` is the one this guess was made for, the caller's words compared normalized.
        A guess whose stream already failed answers nothing: the model is asked afresh."""
        mine = self.request
        if self.outcome != "running" or self.failed is not None:
            return False
        same_settings = (
            mine.tools == request.tools
            and mine.temperature == request.temperature
            and mine.max_tokens == request.max_tokens
            and mine.tool_choice == request.tool_choice
            and mine.options == request.options
        )
        if not same_settings or len(mine.messages) != len(request.messages):
            return False
        if mine.messages[:-1] != request.messages[:-1]:
            return False
        guessed, final = mine.messages[-1], request.messages[-1]
        return (
            final.role == "user"
            and not final.tool_calls
            and normalize(final.content or "") == normalize(guessed.content or "")
        )

    def cancel(self) -> None:
        """Drop the guess: stop reading the model (which stops it). Safe to call at any time;
        a guess already kept is being replayed and stops only with its reader."""
        if self.outcome == "running":
            self.outcome = "cancelled"
            self._task.cancel()

    @property
    def done(self) -> bool:
        """The background read is over (finished, failed or cancelled)."""
        return self._task.done()

    def serving(self, fallback: LLM) -> LLM:
        """An LLM for the reply that commits this guess: its first request is served from the
        guess when `answers` says so; every other request goes to `fallback`."""
        return _Served(fallback, self)

    # -- the stream ----------------------------------------------------------------------------
    async def _generate(self) -> None:
        stream = self._llm.stream(self.request)
        error: Exception | None = None
        try:
            async for event in stream:
                await self._held.put(event)
        except Exception as exc:  # kept for the reader; a guess never raises into its owner
            error = exc
            if self.outcome == "running":
                self.failed = exc
                log.info("speculative reply failed", error=str(exc) or type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await _aclose(stream)
        await self._held.put(_End(error))

    async def replay(self) -> AsyncGenerator[LLMEvent, None]:
        """The guessed stream, from its first event: what is buffered, then the rest as the
        model writes it. Leaving early (an interruption, a length limit) stops the model."""
        self.outcome = "kept"
        try:
            while not isinstance(item := await self._held.get(), _End):
                yield item
            if item.error is not None:
                raise item.error
        finally:
            if not self._task.done():
                self._task.cancel()


class _Served:
    """The reply's LLM while a guess is pending: the first request is the guess's to answer."""

    def __init__(self, llm: LLM, guess: SpeculativeReply) -> None:
        self.label = llm.label
        self._llm = llm
        self._guess: SpeculativeReply | None = guess

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        guess, self._guess = self._guess, None
        if guess is not None:
            if guess.answers(request):
                async with contextlib.aclosing(guess.replay()) as events:
                    async for event in events:
                        yield event
                return
            if guess.outcome == "running":
                log.info("speculative reply does not fit the request: asking the model afresh")
            guess.cancel()
        async with contextlib.aclosing(_events(self._llm, request)) as events:
            async for event in events:
                yield event

    async def aclose(self) -> None:
        guess, self._guess = self._guess, None
        if guess is not None:
            guess.cancel()


async def _events(llm: LLM, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
    stream = llm.stream(request)
    try:
        async for event in stream:
            yield event
    finally:
        await _aclose(stream)


async def _aclose(stream: AsyncIterator[object]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
