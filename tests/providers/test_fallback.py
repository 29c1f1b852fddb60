"""FallbackLLM: switch providers only while nothing has been said yet."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from voxline.providers.llm.base import (
    ChatMessage,
    LLMError,
    LLMEvent,
    LLMRequest,
    TextDelta,
    complete,
)
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.providers.llm.fallback import FallbackLLM

REQUEST = LLMRequest(messages=[ChatMessage(role="user", content="hello")])


def outage(message: str = "503 from upstream", *, retryable: bool = True) -> FakeReply:
    return FakeReply(fail_before=LLMError(message, provider="a", retryable=retryable))


def test_label_names_every_provider() -> None:
    assert FallbackLLM([FakeLLM(label="a"), FakeLLM(label="b")]).label == "fallback(a,b)"


def test_needs_at_least_one_provider() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FallbackLLM([])


async def test_first_provider_answers() -> None:
    first, second = FakeLLM(["from a"], label="a"), FakeLLM(["from b"], label="b")
    result = await complete(FallbackLLM([first, second]), REQUEST)
    assert result.text == "from a"
    assert second.requests == []


async def test_failure_before_the_first_event_moves_on_and_is_logged() -> None:
    first = FakeLLM([outage()], label="a")
    second = FakeLLM(["from b"], label="b")

    with capture_logs() as logs:
        result = await complete(FallbackLLM([first, second]), REQUEST)

    assert result.text == "from b"
    assert second.requests == [REQUEST]
    [entry] = [log for log in logs if log["event"] == "llm_fallover"]
    assert entry["provider"] == "a"
    assert entry["reason"] == "503 from upstream"
    assert entry["next_provider"] == "b"
    assert entry["log_level"] == "warning"


async def test_non_retryable_and_unexpected_errors_also_move_on() -> None:
    llms = [
        FakeLLM([outage("bad key", retryable=False)], label="a"),
        FakeLLM([FakeReply(fail_before=RuntimeError("driver crashed"))], label="b"),
        FakeLLM(["from c"], label="c"),
    ]
    assert (await complete(FallbackLLM(llms), REQUEST)).text == "from c"


async def test_failure_after_the_first_event_propagates() -> None:
    first = FakeLLM([FakeReply(text="Half a sentence", fail_after=1)], label="a")
    second = FakeLLM(["from b"], label="b")
    seen: list[LLMEvent] = []

    with pytest.raises(LLMError, match="dropped"):
        async for event in FallbackLLM([first, second]).stream(REQUEST):
            seen.append(event)

    assert seen == [TextDelta("Half ")]
    assert second.requests == []


async def test_every_provider_failing_raises_one_error_naming_them_all() -> None:
    llms = [
        FakeLLM([outage("timeout", retryable=True)], label="a"),
        FakeLLM([outage("bad request", retryable=False)], label="b"),
    ]

    with pytest.raises(LLMError) as caught:
        await complete(FallbackLLM(llms), REQUEST)

    assert str(caught.value) == "fallback(a,b): every provider failed (a: timeout; b: bad request)"
    assert caught.value.provider == "fallback(a,b)"
    assert caught.value.retryable is True


async def test_all_failures_non_retryable_is_not_retryable() -> None:
    llms = [FakeLLM([outage("x", retryable=False)], label=n) for n in ("a", "b")]
    with pytest.raises(LLMError) as caught:
        await complete(FallbackLLM(llms), REQUEST)
    assert caught.value.retryable is False


async def test_a_silent_provider_counts_as_failed_after_first_event_timeout() -> None:
    hung = FakeLLM([FakeReply(text="too late", ttft=30)], label="hung")
    second = FakeLLM(["from b"], label="b")

    with capture_logs() as logs:
        result = await complete(FallbackLLM([hung, second], first_event_timeout=0.05), REQUEST)

    assert result.text == "from b"
    assert [log["reason"] for log in logs] == ["no first event in time"]
