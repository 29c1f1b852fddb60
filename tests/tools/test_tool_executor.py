"""The executor: every failure becomes an outcome, cancellation does not."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from pydantic import BaseModel

from tests.tools.tool_fakes import FakeClock
from voxline.providers.llm.base import ConfigurationError, ToolCallRequest
from voxline.tools.base import RunContext, Tool
from voxline.tools.breaker import CircuitState
from voxline.tools.decorator import tool
from voxline.tools.executor import ToolExecutor, to_content


def call(
    name: str, arguments: dict[str, Any] | str = "{}", call_id: str = "call_1"
) -> ToolCallRequest:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCallRequest(id=call_id, name=name, arguments=text)


def ctx(call_id: str = "") -> RunContext:
    return RunContext(conversation_id="conv_1", call_id=call_id, subject="phone:+14155550100")


class Recorder:
    """Stands in for asyncio.sleep so backoff delays are observed, not waited for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Forecast(BaseModel):
    city: str
    high: int


async def test_async_tool_result_and_context_injection() -> None:
    seen: list[RunContext] = []

    @tool
    async def greet(name: str, context: RunContext) -> str:
        """Greet someone."""
        seen.append(context)
        return f"hello {name}"

    outcome = await ToolExecutor([greet]).run(call("greet", {"name": "Ada"}, "call_9"), ctx())
    assert (outcome.content, outcome.is_error, outcome.call_id, outcome.name) == (
        "hello Ada",
        False,
        "call_9",
        "greet",
    )
    assert outcome.attempts == 1
    assert seen[0].call_id == "call_9"
    assert seen[0].subject == "phone:+14155550100"


async def test_sync_tool_runs_off_the_event_loop_thread() -> None:
    threads: list[int] = []

    @tool
    def blocking_lookup(order_id: str) -> dict[str, str]:
        """Look an order up."""
        threads.append(threading.get_ident())
        return {"order": order_id, "status": "shipped"}

    outcome = await ToolExecutor([blocking_lookup]).run(
        call("blocking_lookup", {"order_id": "A1"}), ctx()
    )
    assert json.loads(outcome.content) == {"order": "A1", "status": "shipped"}
    assert threads and threads[0] != threading.get_ident()


def test_results_become_text_for_the_model() -> None:
    assert to_content("plain") == "plain"
    assert json.loads(to_content(Forecast(city="Oslo", high=3))) == {"city": "Oslo", "high": 3}
    assert json.loads(to_content([1, {"a": Forecast(city="x", high=1)}])) == [
        1,
        {"a": {"city": "x", "high": 1}},
    ]
    assert to_content(None) == "done"
    assert to_content("") == "done"
    assert to_content(4.5) == "4.5"


async def test_run_many_overlaps_calls_and_keeps_call_order() -> None:
    first_started = asyncio.Event()
    second_started = asyncio.Event()

    @tool
    async def first() -> str:
        first_started.set()
        await second_started.wait()  # only finishes if `second` runs at the same time
        return "one"

    @tool
    async def second() -> str:
        second_started.set()
        await first_started.wait()
        return "two"

    @tool
    async def broken() -> str:
        raise RuntimeError("boom")

    executor = ToolExecutor([first, second, broken])
    calls = [
        call("broken", call_id="c0"),
        call("first", call_id="c1"),
        call("second", call_id="c2"),
    ]
    outcomes = await asyncio.wait_for(executor.run_many(calls, lambda c: ctx(c.id)), timeout=5)
    assert [o.call_id for o in outcomes] == ["c0", "c1", "c2"]
    assert [o.content for o in outcomes] == ["the tool failed: RuntimeError: boom", "one", "two"]
    assert [o.is_error for o in outcomes] == [True, False, False]


async def test_timeout_becomes_an_error_outcome() -> None:
    @tool(timeout=0.01)
    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    outcome = await ToolExecutor([hang]).run(call("hang"), ctx())
    assert outcome.is_error
    assert outcome.content == "the tool failed: timed out after 0.01s"


async def test_a_tool_raising_timeout_error_itself_is_reported_as_an_error() -> None:
    @tool(timeout=60)
    async def upstream() -> str:
        raise TimeoutError("upstream took too long")

    outcome = await ToolExecutor([upstream]).run(call("upstream"), ctx())
    assert outcome.content == "the tool failed: TimeoutError: upstream took too long"


async def test_exception_becomes_an_error_outcome() -> None:
    @tool
    def explode(x: int) -> int:
        """Fails."""
        raise ValueError(f"cannot handle {x}")

    outcome = await ToolExecutor([explode]).run(call("explode", {"x": 3}), ctx())
    assert outcome.is_error
    assert outcome.content == "the tool failed: ValueError: cannot handle 3"


async def test_retries_with_exponential_backoff_then_success() -> None:
    attempts = 0

    @tool(retries=3, backoff=0.2)
    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("reset")
        return "ok now"

    sleep = Recorder()
    outcome = await ToolExecutor([flaky], sleep=sleep).run(call("flaky"), ctx())
    assert (outcome.content, outcome.is_error, outcome.attempts) == ("ok now", False, 3)
    assert sleep.delays == pytest.approx([0.2, 0.4])


async def test_retries_cover_timeouts_and_report_the_last_failure() -> None:
    @tool(retries=1, backoff=0, timeout=0.01)
    async def slow() -> str:
        await asyncio.Event().wait()
        return "never"

    outcome = await ToolExecutor([slow], sleep=Recorder()).run(call("slow"), ctx())
    assert outcome.attempts == 2
    assert outcome.content == "the tool failed: timed out after 0.01s"


async def test_breaker_opens_after_threshold_and_half_opens_after_reset() -> None:
    clock = FakeClock()
    healthy = False
    runs = 0

    @tool(breaker_threshold=2, breaker_reset=30)
    async def backend() -> str:
        nonlocal runs
        runs += 1
        if not healthy:
            raise ConnectionError("down")
        return "up"

    executor = ToolExecutor([backend], clock=clock)
    for _ in range(2):
        assert (await executor.run(call("backend"), ctx())).is_error
    assert executor.breaker("backend").state == CircuitState.OPEN

    refused = await executor.run(call("backend"), ctx())
    assert runs == 2  # the open circuit did not call the backend
    assert refused.attempts == 0
    assert refused.content == (
        "the tool failed: backend is unavailable after repeated failures; try again later"
    )

    clock.advance(30)
    assert executor.breaker("backend").state == CircuitState.HALF_OPEN
    assert (await executor.run(call("backend"), ctx())).is_error  # the trial fails: open again
    assert runs == 3
    assert executor.breaker("backend").state == CircuitState.OPEN

    clock.advance(30)
    healthy = True
    assert (await executor.run(call("backend"), ctx())).content == "up"
    assert executor.breaker("backend").state == CircuitState.CLOSED


async def test_an_opening_circuit_stops_retries_and_keeps_the_real_reason() -> None:
    runs = 0

    @tool(retries=5, backoff=0, breaker_threshold=2)
    async def down() -> str:
        nonlocal runs
        runs += 1
        raise ConnectionError("refused")

    outcome = await ToolExecutor([down], sleep=Recorder()).run(call("down"), ctx())
    assert runs == 2
    assert outcome.attempts == 2
    assert outcome.content == "the tool failed: ConnectionError: refused"


async def test_invalid_arguments_are_not_retried_nor_held_against_the_tool() -> None:
    @tool(retries=3, breaker_threshold=1)
    async def get_weather(city: str) -> str:
        """Weather."""
        return city

    executor = ToolExecutor([get_weather], sleep=Recorder())
    outcome = await executor.run(call("get_weather", {"town": "Oslo"}), ctx())
    assert outcome.is_error
    assert outcome.attempts == 1
    assert outcome.content.startswith("the tool failed: invalid arguments for get_weather: ")
    assert "city: field required" in outcome.content
    assert "town: extra inputs are not permitted" in outcome.content
    assert executor.breaker("get_weather").state == CircuitState.CLOSED


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
async def test_arguments_that_are_not_a_json_object(arguments: str) -> None:
    @tool
    async def echo(text: str) -> str:
        return text

    outcome = await ToolExecutor([echo]).run(call("echo", arguments), ctx())
    assert outcome.is_error
    assert outcome.attempts == 0
    assert outcome.content.startswith("the tool failed: arguments ")
    assert arguments in outcome.content


async def test_unknown_tool_names_the_tools_that_exist() -> None:
    @tool
    async def alpha() -> str:
        return ""

    @tool
    async def beta() -> str:
        return ""

    outcome = await ToolExecutor([beta, alpha]).run(call("gamma"), ctx())
    assert outcome.is_error
    assert outcome.content == (
        "the tool failed: no tool named 'gamma'; available tools: alpha, beta"
    )


async def test_cancellation_propagates_and_frees_the_half_open_trial() -> None:
    clock = FakeClock()
    started = asyncio.Event()
    fail = True

    @tool(breaker_threshold=1, breaker_reset=10, retries=2)
    async def long_call() -> str:
        if fail:
            raise ConnectionError("down")
        started.set()
        await asyncio.Event().wait()
        return "never"

    executor = ToolExecutor([long_call], clock=clock, sleep=Recorder())
    await executor.run(call("long_call"), ctx())
    clock.advance(10)
    fail = False
    task = asyncio.create_task(executor.run(call("long_call"), ctx()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert executor.breaker("long_call").allow()  # the trial slot was given back


async def test_cancelling_run_many_cancels_every_call() -> None:
    started: list[str] = []
    both_started = asyncio.Event()
    cancelled: list[str] = []

    @tool
    async def wait_forever(label: str) -> str:
        started.append(label)
        if len(started) == 2:
            both_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(label)
            raise
        return label

    executor = ToolExecutor([wait_forever])
    calls = [call("wait_forever", {"label": x}, call_id=x) for x in ("a", "b")]
    task = asyncio.create_task(executor.run_many(calls, lambda c: ctx(c.id)))
    await both_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(cancelled) == ["a", "b"]


def test_duplicate_names_and_unconfigured_approval_fail_fast() -> None:
    @tool(name="dup_probe")
    async def one() -> str:
        return ""

    @tool(needs_approval=True)
    async def refund(amount: int) -> str:
        """Refund."""
        return ""

    with pytest.raises(ValueError, match="two tools are named 'dup_probe'"):
        ToolExecutor([one, one])
    with pytest.raises(ConfigurationError, match="refund need approval"):
        ToolExecutor([refund])


def test_definitions_are_what_the_model_sees() -> None:
    @tool
    async def lookup(q: str) -> str:
        """Search the catalogue."""
        return q

    executor = ToolExecutor([lookup])
    tools: list[Tool] = list(executor.tools.values())
    assert tools == [lookup]
    [definition] = executor.definitions()
    assert (definition.name, definition.description) == ("lookup", "Search the catalogue.")
    assert definition.parameters["required"] == ["q"]
