"""An LLM that screens a caller's turn while the agent is already answering it.

A model round trip before every reply would add hundreds of milliseconds to each turn, which a
voice caller hears. So the classifier starts with the reply and races it: when it passes (the
common case) nobody waited; when it trips, the engine stops the reply where it is and gives the
configured response instead. It reads only the verdict word, stopping the stream once it is
known, and it fails open: a classifier that errs or runs past its timeout lets the turn through
and says so in the log, because a guardrail outage must not silence every call.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from voxline.guardrails.checks import Trip
from voxline.guardrails.config import ClassifierCheck
from voxline.providers.llm.base import LLM, ChatMessage, LLMRequest, TextDelta

log = structlog.get_logger("voxline.guardrails")

_VERDICT_CHARS = 64  # enough text to read the verdict word and a short reason


class LLMClassifier:
    """Asks `llm` about one turn; `classify` returns a `Trip` or None."""

    def __init__(self, llm: LLM, config: ClassifierCheck) -> None:
        self.llm = llm
        self.config = config

    async def classify(self, text: str) -> Trip | None:
        try:
            async with asyncio.timeout(self.config.timeout):
                answer = await self._ask(text)
        except TimeoutError:
            log.warning(
                "guardrail classifier timed out; the turn passes", timeout=self.config.timeout
            )
            return None
        except Exception as exc:
            log.warning("guardrail classifier failed; the turn passes", error=type(exc).__name__)
            return None
        verdict, _, reason = answer.strip().partition(":")
        if not verdict.strip().upper().startswith(self.config.trip_on.strip().upper()):
            return None
        return Trip("classifier", reason.strip()[:200] or "the classifier blocked the turn")

    async def _ask(self, text: str) -> str:
        request = LLMRequest(
            messages=[
                ChatMessage(role="system", content=self.config.instructions),
                ChatMessage(role="user", content=text),
            ],
            temperature=0.0,
            max_tokens=32,
        )
        answer = ""
        stream = self.llm.stream(request)
        try:
            async for event in stream:
                if isinstance(event, TextDelta):
                    answer += event.text
                    if len(answer) >= _VERDICT_CHARS or "\n" in answer.strip():
                        break
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        return answer

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.llm.aclose()
