"""Try LLM providers in order until one starts answering.

A provider may be swapped only before it has said anything: once the caller has heard half a
sentence from one model, splicing in another model's answer would be worse than an error. So a
failure before the first event moves on to the next provider, and a failure after it propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

import structlog

from voxline.providers.llm.base import LLM, LLMError, LLMEvent, LLMRequest
from voxline.telemetry import counters

log = structlog.get_logger(__name__)


class FallbackLLM:
    """Streams from the first of `llms` that yields an event.

    `first_event_timeout` (seconds) also counts a provider that stays silent that long as failed,
    since a hung provider costs a caller as much as a broken one.
    """

    def __init__(
        self,
        llms: Sequence[LLM],
        *,
        label: str | None = None,
        first_event_timeout: float | None = None,
    ) -> None:
        if not llms:
            raise ValueError("FallbackLLM needs at least one LLM")
        self.llms = list(llms)
        self.label = label or f"fallback({','.join(llm.label for llm in self.llms)})"
        self._first_event_timeout = first_event_timeout

    async def stream(self, request: LLMRequest) -> AsyncGenerator[LLMEvent, None]:
        failures: list[_Failure] = []
        for position, llm in enumerate(self.llms):
            events = llm.stream(request)
            deadline = asyncio.timeout(self._first_event_timeout)
            try:
                try:
                    async with deadline:
                        first = await anext(events)
                except StopAsyncIteration:
                    return
                except Exception as exc:  # any failure before the first event is a fall-over
                    failure = _Failure(llm.label, exc, timed_out=deadline.expired())
                    failures.append(failure)
                    self._log_fallover(failure, self.llms[position + 1 :])
                    continue
                yield first
                async for event in events:
                    yield event
                return
            finally:
                await _close(events)
        raise _all_failed(self.label, failures)

    def _log_fallover(self, failure: _Failure, rest: Sequence[LLM]) -> None:
        counters.fallback(failure.provider)
        log.warning(
            "llm_fallover",
            llm=self.label,
            provider=failure.provider,
            reason=failure.reason,
            retryable=failure.retryable,
            next_provider=rest[0].label if rest else None,
            exc_info=failure.error if failure.unexpected else None,
        )

    async def aclose(self) -> None:
        for llm in self.llms:
            await llm.aclose()


@dataclass(frozen=True)
class _Failure:
    provider: str
    error: Exception
    timed_out: bool

    @property
    def reason(self) -> str:
        if self.timed_out:
            return "no first event in time"
        return str(self.error) or type(self.error).__name__

    @property
    def retryable(self) -> bool:
        return not isinstance(self.error, LLMError) or self.error.retryable

    @property
    def unexpected(self) -> bool:
        """Not a provider's reported failure: worth a traceback in the log."""
        return not (self.timed_out or isinstance(self.error, LLMError))


def _all_failed(label: str, failures: list[_Failure]) -> LLMError:
    reasons = "; ".join(f"{f.provider}: {f.reason}" for f in failures)
    error = LLMError(
        f"{label}: every provider failed ({reasons})",
        provider=label,
        retryable=any(f.retryable for f in failures),
    )
    error.__cause__ = failures[-1].error
    return error


async def _close(events: AsyncIterator[LLMEvent]) -> None:
    """Release a provider's stream (its HTTP response) even when the consumer stopped early."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
