"""Does the embedded model call tools only when it should, with the caller's own values?

    .venv/bin/python benchmarks/tool_precision.py [--limit N] [--only WORD] [--threads N]
        [--call-bias B]

Runs a dev set of realistic caller requests through the real reply engine (`ReplyEngine`, the
tool loop every session uses) with the local Qwen model and six tools whose fake
implementations return realistic results. Each case names the calls it needs, in order (none
for small talk, statements and questions no tool answers; none either when a needed value is
missing, where the model must ask), and the words the spoken answer must contain when it
reports a result. Prints each miss, then precision/recall of calls, precision on requests that
need no tool, argument accuracy, result reporting, two-step success and latencies.

`--only` keeps the cases whose id or kind contains the word; `--limit` keeps the first N of
each kind, so a short run still covers every kind. `--threads` is llama.cpp's thread count
(its default, every core, decodes several times slower on a machine other work keeps busy).
`--call-bias` overrides the local provider's logit bias on a call's first token (`CALL_BIAS`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from _tool_cases import CASES, INSTRUCTIONS, MAX_TOKENS, Call, Case, dev_tools
from voxline.conversation.engine import Delivery, ReplyEngine, ReplyPlan
from voxline.conversation.state import SessionState, StateMachine
from voxline.conversation.turns import BotTurn, ToolCallTurn, TurnStore
from voxline.events import EventBus
from voxline.providers.llm.base import ChatMessage, LLMRequest, ToolCallDelta
from voxline.providers.llm.local import LocalLLM, create_local_llm
from voxline.settings import Settings
from voxline.tools.base import RunContext, Tool
from voxline.tools.executor import ToolExecutor


@dataclass
class Outcome:
    case: Case
    calls: list[Call] = field(default_factory=list)
    text: str = ""
    decision: float | None = None
    first_word: float | None = None
    named: float | None = None  # the call's name announced (a voice filler could start)
    withdrawn: int = 0  # calls named, then not made (the filler was said for nothing)


async def run_case(llm: LocalLLM, tools: list[Tool], case: Case) -> Outcome:
    """One caller turn through the real engine, timed from the moment the turn is complete."""
    bus = EventBus()
    turns = TurnStore(f"bench_{case.id}", bus)
    engine = ReplyEngine(
        turns,
        bus,
        StateMachine(bus, SessionState.LISTENING),
        ToolExecutor(tools),
        Delivery(auto=True),
        lambda call_id: RunContext(conversation_id=turns.conversation_id, call_id=call_id),
    )
    plan = ReplyPlan(llm=llm, instructions=INSTRUCTIONS, tools=tools, max_tokens=MAX_TOKENS)
    outcome = Outcome(case)
    started = time.monotonic()

    def on_delta(turn: BotTurn, delta: str) -> None:
        if outcome.first_word is None and delta.strip():
            outcome.first_word = time.monotonic() - started

    bus.on("bot_text_delta", on_delta)
    turns.add_user_text(case.text)
    decisions: list[float] = []
    original = llm.stream

    def stream(request: LLMRequest) -> Any:  # records each step's decision time
        async def steps() -> Any:
            async for event in original(request):
                if isinstance(event, ToolCallDelta) and event.name and outcome.named is None:
                    outcome.named = time.monotonic() - started
                outcome.withdrawn += isinstance(event, ToolCallDelta) and event.withdrawn
                yield event
            if llm.last_decision is not None:
                decisions.append(llm.last_decision)

        return steps()

    llm.stream = stream  # type: ignore[method-assign]
    try:
        await engine.reply(plan)
    finally:
        del llm.stream
        await engine.finish_tools()
    outcome.decision = decisions[0] if decisions else None
    for turn in turns:
        if isinstance(turn, ToolCallTurn):
            outcome.calls.append((turn.name, json.loads(turn.arguments or "{}")))
        elif isinstance(turn, BotTurn):
            outcome.text += " " + turn.content
    outcome.text = outcome.text.strip()
    return outcome


def _same_args(expected: dict[str, Any], got: dict[str, Any]) -> bool:
    return all(
        str(got.get(key, "")).strip().lower().rstrip(".") == str(value).lower()
        for key, value in expected.items()
    )


def _asks(text: str) -> bool:
    """A question for the missing value, with or without its question mark."""
    return "?" in text or any(
        cue in text for cue in ("please provide", "please tell", "please give", "i need", "which")
    )


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "n/a"


def _quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):.2f} s, p95 {p95:.2f} s (n={len(ordered)})"


def report(outcomes: list[Outcome]) -> list[tuple[str, str]]:
    tp = fp = fn = args_ok = 0
    reported = reportable = two_ok = two = no_tool_clean = no_tool = asked = ask = 0
    for out in outcomes:
        case = out.case
        expected = list(case.calls)
        matched = 0
        for name, arguments in out.calls:
            hit = next((e for e in expected if e[0] == name), None)
            if hit is None:
                fp += 1
                continue
            expected.remove(hit)
            tp += 1
            matched += 1
            args_ok += _same_args(hit[1], arguments)
        fn += len(expected)
        text = out.text.lower()
        if case.kind in ("none", "ask"):
            no_tool += 1
            no_tool_clean += not out.calls
        if case.kind == "ask":
            ask += 1
            asked += not out.calls and _asks(text)
        if case.calls and matched:
            reportable += 1
            reported += any(word in text for word in case.report)
        if case.kind == "two":
            two += 1
            two_ok += len(out.calls) == len(case.calls) and all(
                got[0] == want[0] and _same_args(want[1], got[1])
                for got, want in zip(out.calls, case.calls, strict=False)
            )
    tool_cases = [o for o in outcomes if o.case.calls]
    quiet_cases = [o for o in outcomes if not o.case.calls]
    return [
        ("cases", str(len(outcomes))),
        ("tool-call precision (calls)", _pct(tp, tp + fp)),
        ("tool-call recall (calls)", _pct(tp, tp + fn)),
        ("no call on requests needing none", _pct(no_tool_clean, no_tool)),
        ("asked for a missing value", _pct(asked, ask)),
        ("argument accuracy (right tool)", _pct(args_ok, tp)),
        ("result reported in the answer", _pct(reported, reportable)),
        ("two-step success", _pct(two_ok, two)),
        ("time to decision, no-tool cases", _quantiles(_times(quiet_cases, "decision"))),
        ("time to decision, tool cases", _quantiles(_times(tool_cases, "decision"))),
        ("time to first word, no-tool cases", _quantiles(_times(quiet_cases, "first_word"))),
        ("time to first word, tool cases", _quantiles(_times(tool_cases, "first_word"))),
        ("time to the call's name, tool cases", _quantiles(_times(tool_cases, "named"))),
        ("calls named then withdrawn", str(sum(o.withdrawn for o in outcomes))),
    ]


def _times(outcomes: list[Outcome], attribute: str) -> list[float]:
    values = (getattr(o, attribute) for o in outcomes)
    return [v for v in values if v is not None]


def _miss(out: Outcome) -> str | None:
    case = out.case
    got = [(name, args) for name, args in out.calls]
    want = list(case.calls)
    wrong_calls = [n for n, _ in got] != [n for n, _ in want] or not all(
        _same_args(w[1], g[1]) for g, w in zip(got, want, strict=False)
    )
    unreported = case.calls and not any(word in out.text.lower() for word in case.report)
    unasked = case.kind == "ask" and not _asks(out.text.lower())
    if wrong_calls or unreported or unasked:
        return f"miss {case.id} ({case.kind}) {case.text!r}: calls={got} said={out.text[:120]!r}"
    return None


def select(only: str | None, limit: int | None) -> list[Case]:
    cases = [c for c in CASES if not only or only in c.id or only == c.kind]
    if limit is None:
        return cases
    kept: list[Case] = []
    for kind in ("none", "ask", "one", "two"):
        kept += [c for c in cases if c.kind == kind][:limit]
    return kept


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="first N cases of each kind")
    parser.add_argument("--only", help="cases whose id contains this, or a kind")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: every core)")
    parser.add_argument("--call-bias", type=float, help="logit bias on a call's first token")
    options = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cases = select(options.only, options.limit)
    print(f"load average at start: {os.getloadavg()}; {len(cases)} cases")
    llm = create_local_llm(None, Settings(), threads=options.threads)
    print(f"model load: {llm.load():.1f} s")
    if options.call_bias is not None:
        llm.call_bias = options.call_bias
    print(f"call bias: {llm.call_bias}")
    tools = dev_tools()
    warm_started = time.monotonic()
    await llm.warm(
        LLMRequest([ChatMessage("system", INSTRUCTIONS)], tools=[t.definition() for t in tools])
    )
    print(f"system prompt with 6 tools evaluated in {time.monotonic() - warm_started:.1f} s")
    outcomes = []
    for case in cases:
        outcome = await run_case(llm, tools, case)
        outcomes.append(outcome)
        if (miss := _miss(outcome)) is not None:
            print(miss, flush=True)
        if outcome.withdrawn:
            print(f"named then withdrawn: {case.id} {case.text!r}", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    rows = report(outcomes)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    asyncio.run(main())
