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

from voxline.conversation.engine import Delivery, ReplyEngine, ReplyPlan
from voxline.conversation.state import SessionState, StateMachine
from voxline.conversation.turns import BotTurn, ToolCallTurn, TurnStore
from voxline.events import EventBus
from voxline.providers.llm.base import ChatMessage, LLMRequest, ToolCallDelta
from voxline.providers.llm.local import LocalLLM, create_local_llm
from voxline.settings import Settings
from voxline.tools.base import RunContext, Tool
from voxline.tools.decorator import tool
from voxline.tools.executor import ToolExecutor

INSTRUCTIONS = (
    "You are the phone assistant of Northwind, a shop that also helps with everyday tasks. "
    "Speak naturally and keep answers to one or two short sentences."
)
MAX_TOKENS = 60  # a spoken answer's first sentences are what the measures need

ORDERS = {
    "12345": {"status": "delivered", "delivered_on": "Monday", "total": "$42.50", "city": "Lyon"},
    "777": {"status": "in transit", "expected": "Friday", "total": "$18.00", "city": "Leeds"},
    "4512": {"status": "delivered", "delivered_on": "yesterday", "total": "$99.90", "city": "Graz"},
    "A-77": {"status": "processing", "expected": "next week", "total": "$7.25", "city": "Turin"},
    "9001": {"status": "delivered", "delivered_on": "June 3", "total": "$120.00", "city": "Cork"},
}
WEATHER = {"paris": ("light rain", 14), "tokyo": ("sunny", 22), "oslo": ("snow", -3)}


def _tools() -> list[Tool]:
    @tool
    async def get_weather(city: str) -> str:
        """Get today's weather forecast for a city.

        Args:
            city: The city name.
        """
        sky, high = WEATHER.get(city.lower(), ("cloudy", 17))
        return json.dumps({"city": city, "forecast": sky, "high_c": high})

    @tool
    async def lookup_order(order_id: str) -> str:
        """Look up the status of a customer's order by its order number.

        Args:
            order_id: The order number.
        """
        order = ORDERS.get(order_id.upper())
        if order is None:
            return json.dumps({"error": f"no order {order_id}"})
        return json.dumps({"order_id": order_id, **order})

    @tool
    async def refund_order(order_id: str) -> str:
        """Refund a delivered order by its order number.

        Args:
            order_id: The order number.
        """
        order = ORDERS.get(order_id.upper())
        if order is None or order["status"] != "delivered":
            return json.dumps({"error": "only delivered orders can be refunded"})
        return json.dumps({"refunded": order["total"], "arrives_in": "3 to 5 days"})

    @tool
    async def book_table(restaurant: str, people: int, time: str) -> str:
        """Book a table at a restaurant.

        Args:
            restaurant: The restaurant's name.
            people: How many people.
            time: When, as the caller said it.
        """
        return json.dumps({"booked": True, "restaurant": restaurant, "reference": "BK-3301"})

    @tool
    async def set_timer(minutes: int) -> str:
        """Start a countdown timer.

        Args:
            minutes: Length of the timer in minutes.
        """
        return json.dumps({"timer": "started", "ends_in_minutes": minutes})

    @tool
    async def flight_status(flight_number: str) -> str:
        """Get the live status of a flight by its flight number.

        Args:
            flight_number: The flight number, like BA117.
        """
        return json.dumps({"flight": flight_number, "status": "delayed", "new_departure": "18:40"})

    return [get_weather, lookup_order, refund_order, book_table, set_timer, flight_status]


Call = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # none | ask | one | two
    text: str
    calls: tuple[Call, ...] = ()
    report: tuple[str, ...] = ()  # any of these in the answer = the result was reported


def _c(name: str, **arguments: Any) -> Call:
    return (name, arguments)


NONE = [
    "Hello, how are you?",
    "Hi there!",
    "Good morning.",
    "Thanks, that's all.",
    "Thank you so much, bye.",
    "I live on Main Street.",
    "My name is Sarah.",
    "I just got back from Paris.",
    "My order arrived yesterday, it was great.",
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote Romeo and Juliet?",
    "What is 12 times 12?",
    "Tell me a joke.",
    "Can you recommend a good book?",
    "What are your opening hours?",
    "What does a timer do?",
    "Is it normal for flights to be delayed in winter?",
    "I love rainy days.",
    "What's your favourite restaurant?",
    "Can you hear me?",
    "Sorry, I was distracted for a second.",
    "How do I boil an egg?",
    "It's raining here today.",
]
ASK = [
    ("What's the weather like?", "city"),
    ("Can you check my order?", "order"),
    ("I want a refund.", "order"),
    ("Set a timer please.", "minutes"),
    ("Book a table for me.", "restaurant"),
    ("Is my flight on time?", "flight"),
]
ONE = [
    Case(
        "w1", "one", "What's the weather in Paris?", (_c("get_weather", city="paris"),), ("rain",)
    ),
    Case(
        "w2",
        "one",
        "Will it be sunny in Tokyo today?",
        (_c("get_weather", city="tokyo"),),
        ("sun",),
    ),
    Case(
        "w3",
        "one",
        "Do I need a coat in Oslo?",
        (_c("get_weather", city="oslo"),),
        ("snow", "-3", "cold"),
    ),
    Case(
        "w4",
        "one",
        "How warm is it in Madrid?",
        (_c("get_weather", city="madrid"),),
        ("17", "cloud"),
    ),
    Case(
        "o1",
        "one",
        "Where is my order 777?",
        (_c("lookup_order", order_id="777"),),
        ("transit", "friday"),
    ),
    Case(
        "o2",
        "one",
        "Has order 4512 arrived?",
        (_c("lookup_order", order_id="4512"),),
        ("delivered", "yesterday"),
    ),
    Case(
        "o3",
        "one",
        "Can you check order A-77 for me?",
        (_c("lookup_order", order_id="a-77"),),
        ("process", "next week"),
    ),
    Case(
        "o4",
        "one",
        "What's the status of order 9001?",
        (_c("lookup_order", order_id="9001"),),
        ("delivered", "june"),
    ),
    Case(
        "r1",
        "one",
        "Please refund order 9001.",
        (_c("refund_order", order_id="9001"),),
        ("120", "refund"),
    ),
    Case(
        "r2",
        "one",
        "I'd like a refund for order 4512.",
        (_c("refund_order", order_id="4512"),),
        ("99", "refund"),
    ),
    Case(
        "b1",
        "one",
        "Book a table at Luigi's for two people at 7 pm.",
        (_c("book_table", restaurant="luigi's", people=2),),
        ("booked", "bk-3301", "book"),
    ),
    Case(
        "b2",
        "one",
        "Can you reserve a table for 4 at The Ivy tonight at eight?",
        (_c("book_table", restaurant="the ivy", people=4),),
        ("booked", "bk-3301", "book", "reserv"),
    ),
    Case(
        "t1",
        "one",
        "Set a timer for 10 minutes.",
        (_c("set_timer", minutes=10),),
        ("10", "ten", "timer"),
    ),
    Case(
        "t2",
        "one",
        "Start a five minute timer.",
        (_c("set_timer", minutes=5),),
        ("5", "five", "timer"),
    ),
    Case(
        "t3",
        "one",
        "Remind me in 20 minutes, set a timer.",
        (_c("set_timer", minutes=20),),
        ("20", "twenty", "timer"),
    ),
    Case(
        "f1",
        "one",
        "Is flight BA117 on time?",
        (_c("flight_status", flight_number="ba117"),),
        ("delay", "18:40"),
    ),
    Case(
        "f2",
        "one",
        "What's the status of flight LH400?",
        (_c("flight_status", flight_number="lh400"),),
        ("delay", "18:40"),
    ),
    Case(
        "f3",
        "one",
        "When does my flight AF1234 leave?",
        (_c("flight_status", flight_number="af1234"),),
        ("18:40", "delay"),
    ),
    Case(
        "w5",
        "one",
        "I'm flying to Tokyo tomorrow. What's the weather there?",
        (_c("get_weather", city="tokyo"),),
        ("sun",),
    ),
    Case(
        "o5",
        "one",
        "Hi, order 12345, where is it?",
        (_c("lookup_order", order_id="12345"),),
        ("delivered", "monday"),
    ),
    Case(
        "t4",
        "one",
        "Timer for 15 minutes.",
        (_c("set_timer", minutes=15),),
        ("15", "fifteen", "timer"),
    ),
    Case(
        "f4",
        "one",
        "Track flight UA90 for me.",
        (_c("flight_status", flight_number="ua90"),),
        ("delay", "18:40"),
    ),
]
TWO = [
    Case(
        "c1",
        "two",
        "Check order 12345 and refund it if it was delivered.",
        (_c("lookup_order", order_id="12345"), _c("refund_order", order_id="12345")),
        ("42.50", "refund"),
    ),
    Case(
        "c2",
        "two",
        "Look up order 9001, and if it's delivered, refund it.",
        (_c("lookup_order", order_id="9001"), _c("refund_order", order_id="9001")),
        ("120", "refund"),
    ),
    Case(
        "c3",
        "two",
        "Check order 777 and refund it if it was delivered.",
        (_c("lookup_order", order_id="777"),),
        ("transit", "not", "friday"),
    ),
    Case(
        "c4",
        "two",
        "What's the weather in Paris and in Oslo?",
        (_c("get_weather", city="paris"), _c("get_weather", city="oslo")),
        ("snow", "-3"),
    ),
    Case(
        "c5",
        "two",
        "Where is order 12345 going, and what's the weather there?",
        (_c("lookup_order", order_id="12345"), _c("get_weather", city="lyon")),
        ("17", "cloud"),
    ),
    Case(
        "c6",
        "two",
        "Check flight BA117 and set a timer for 30 minutes.",
        (_c("flight_status", flight_number="ba117"), _c("set_timer", minutes=30)),
        ("30", "thirty", "timer"),
    ),
    Case(
        "c7",
        "two",
        "What's the weather in Tokyo? Then book a table at Sushi Ko for 2 at 7.",
        (_c("get_weather", city="tokyo"), _c("book_table", restaurant="sushi ko", people=2)),
        ("booked", "bk-3301", "book"),
    ),
    Case(
        "c8",
        "two",
        "Refund order 4512, then tell me the status of order 777.",
        (_c("refund_order", order_id="4512"), _c("lookup_order", order_id="777")),
        ("transit", "friday"),
    ),
]
CASES = (
    [Case(f"n{i + 1}", "none", text) for i, text in enumerate(NONE)]
    + [Case(f"a{i + 1}", "ask", text, report=(word,)) for i, (text, word) in enumerate(ASK)]
    + ONE
    + TWO
)


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
    tools = _tools()
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
