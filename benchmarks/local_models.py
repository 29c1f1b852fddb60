"""Benchmark the embedded offline models: load, speed, latency and tool-call accuracy.

    .venv/bin/python benchmarks/local_models.py

Prints one table. Speech is measured on audio Piper itself produces (resampled to 16 kHz), so
the script needs nothing but the `local` and `piper` extras. Tool-call accuracy runs a fixed set
of requests (some need a tool, some must not call one, some offer two tools) and counts a case
right only when the call (tool and key argument) or the absence of a call matches: a quick
check of one model step. The full measure of the tool path (60 requests over six tools, two-step
turns, missing values, result reporting, latency through the reply engine) is
`benchmarks/tool_precision.py`.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from voxline.providers.factory import create_vad
from voxline.providers.llm.base import (
    ChatMessage,
    LLMRequest,
    TextDelta,
    ToolDefinition,
    Usage,
    complete,
)
from voxline.providers.llm.local import create_local_llm
from voxline.providers.stt.whisper import create_whisper_stt
from voxline.providers.tts.piper import create_piper_tts
from voxline.settings import Settings

SYSTEM = ChatMessage("system", "You are a friendly voice assistant. Keep answers short.")
SPEECH = (
    "Thanks for calling. Your order shipped this morning and should arrive on Thursday. "
    "Is there anything else I can help you with today?"
)


def _tool(name: str, description: str, **properties: str) -> ToolDefinition:
    return ToolDefinition(
        name,
        description,
        {
            "type": "object",
            "properties": {key: {"type": kind} for key, kind in properties.items()},
            "required": list(properties),
        },
    )


WEATHER = _tool(
    "get_weather",
    "Get the weather forecast for a city on a given day.",
    city="string",
    day="string",
)
TIMER = _tool("set_timer", "Start a countdown timer.", minutes="integer")
ORDER = _tool(
    "lookup_order",
    "Look up the status of a customer's order by its order number.",
    order_id="string",
)


@dataclass(frozen=True)
class Case:
    tools: tuple[ToolDefinition, ...]
    question: str
    expect: tuple[str, str, str] | None  # (tool, argument, value) or None for "no call"


CASES = [
    Case((WEATHER,), "What's the weather in Paris tomorrow?", ("get_weather", "city", "paris")),
    Case((WEATHER,), "What is the capital of France?", None),
    Case((WEATHER,), "Will it rain in Tokyo on Monday?", ("get_weather", "city", "tokyo")),
    Case((WEATHER,), "Tell me a joke.", None),
    Case((WEATHER,), "How many legs does a spider have?", None),
    Case((WEATHER,), "Do I need an umbrella in London today?", ("get_weather", "city", "london")),
    Case((WEATHER,), "Thanks, that's all.", None),
    Case((TIMER,), "Set a timer for 10 minutes.", ("set_timer", "minutes", "10")),
    Case((TIMER,), "What is 12 times 12?", None),
    Case((ORDER,), "Where is my order 4512?", ("lookup_order", "order_id", "4512")),
    Case((ORDER,), "What are your opening hours?", None),
    Case((WEATHER, TIMER), "Start a 5 minute timer please.", ("set_timer", "minutes", "5")),
    Case(
        (WEATHER, TIMER),
        "How hot will it be in Madrid on Friday?",
        ("get_weather", "city", "madrid"),
    ),
    Case((WEATHER, TIMER), "Who wrote Romeo and Juliet?", None),
    Case(
        (WEATHER, ORDER), "Can you check order A-77 for me?", ("lookup_order", "order_id", "a-77")
    ),
    Case(
        (WEATHER, ORDER), "Is it going to snow in Oslo tomorrow?", ("get_weather", "city", "oslo")
    ),
    Case((WEATHER, ORDER), "Hello, how are you?", None),
    Case((ORDER, TIMER), "Remind me in 20 minutes, set a timer.", ("set_timer", "minutes", "20")),
    Case(
        (ORDER, TIMER), "Has order 9001 been delivered yet?", ("lookup_order", "order_id", "9001")
    ),
    Case((ORDER, TIMER), "What does a timer do?", None),
    Case(
        (WEATHER, ORDER),
        "What's the weather like in Berlin today?",
        ("get_weather", "city", "berlin"),
    ),
    Case((WEATHER, TIMER), "Can you recommend a good book?", None),
]


def ask(question: str, tools: tuple[ToolDefinition, ...] = ()) -> LLMRequest:
    return LLMRequest([SYSTEM, ChatMessage("user", question)], tools=list(tools))


def timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


async def bench_speech(rows: list[tuple[str, str]]) -> None:
    tts, stt = create_piper_tts(), create_whisper_stt()
    rows.append(("TTS load (Piper joe)", f"{timed(tts.load):.2f} s"))
    rows.append(("STT load (Whisper tiny.en int8)", f"{timed(stt.load):.2f} s"))
    vad_load = timed(lambda: create_vad("silero"))
    rows.append(("VAD load (Silero v6)", f"{vad_load * 1000:.0f} ms"))

    first_audio, rtf, audio = [], [], np.zeros(0, dtype=np.int16)
    for _ in range(3):
        started = time.perf_counter()
        pieces: list[np.ndarray] = []
        async for chunk in tts.synthesize(SPEECH):
            if not pieces:
                first_audio.append(time.perf_counter() - started)
            pieces.append(chunk.pcm)
        audio = np.concatenate(pieces)
        rtf.append((time.perf_counter() - started) / (len(audio) / tts.sample_rate))
    rows.append(("TTS time to first audio", f"{statistics.median(first_audio) * 1000:.0f} ms"))
    rows.append(("TTS real-time factor", f"{statistics.median(rtf):.3f}"))

    speech = np.asarray(soxr.resample(audio, tts.sample_rate, 16000), dtype=np.int16)
    stt_rtf = []
    for _ in range(3):
        started = time.perf_counter()
        await stt.transcribe(speech)
        stt_rtf.append((time.perf_counter() - started) / (len(speech) / 16000))
    rows.append(
        (
            f"STT real-time factor ({len(speech) / 16000:.1f} s audio)",
            f"{statistics.median(stt_rtf):.3f}",
        )
    )

    vad = create_vad("silero").stream()
    frames = speech[: len(speech) // 512 * 512].reshape(-1, 512)
    started = time.perf_counter()
    for frame in frames:
        vad.process(frame)
    per_chunk = (time.perf_counter() - started) / len(frames)
    rows.append(("VAD per 32 ms chunk", f"{per_chunk * 1e6:.0f} µs"))


async def bench_llm(rows: list[tuple[str, str]]) -> None:
    llm = create_local_llm(None, Settings())
    rows.append(("LLM load (Qwen2.5-Coder-1.5B Q4_K_M)", f"{timed(llm.load):.2f} s"))
    started = time.perf_counter()
    await llm.warm(ask(""))
    rows.append(("LLM warm system prompt", f"{time.perf_counter() - started:.2f} s"))

    ttfts, rates = [], []
    for question in ("What is the capital of France?", "Give me three tips for sleeping well."):
        started = time.perf_counter()
        first = last = 0.0
        usage = Usage()
        async for event in llm.stream(ask(question)):
            now = time.perf_counter() - started
            if isinstance(event, TextDelta):
                first = first or now
                last = now
            elif isinstance(event, Usage):
                usage = event
        ttfts.append(first)
        if usage.completion_tokens > 1 and last > first:
            rates.append((usage.completion_tokens - 1) / (last - first))
    rows.append(("LLM time to first token (warm prefix)", f"{statistics.median(ttfts):.2f} s"))
    rows.append(("LLM decode speed", f"{statistics.median(rates):.1f} tok/s"))

    right, latencies = 0, []
    for case in CASES:
        await llm.warm(ask("", case.tools))
        started = time.perf_counter()
        result = await complete(llm, ask(case.question, case.tools))
        latencies.append(time.perf_counter() - started)
        if _is_right(case, result.tool_calls, result.text):
            right += 1
        else:
            got = [(c.name, c.arguments) for c in result.tool_calls] or result.text
            print(f"tool-call miss: {case.question!r} -> {got}")
    rows.append(
        (
            f"Tool-call accuracy ({len(CASES)} requests)",
            f"{right}/{len(CASES)} ({100 * right / len(CASES):.0f}%)",
        )
    )
    rows.append(("Tool-call request latency (median)", f"{statistics.median(latencies):.2f} s"))


def _is_right(case: Case, calls: list[Any], text: str) -> bool:
    if "{" in text:  # raw JSON reaching the user is always wrong
        return False
    if case.expect is None:
        return not calls
    tool, argument, value = case.expect
    if len(calls) != 1 or calls[0].name != tool:
        return False
    return str(calls[0].parsed_arguments().get(argument, "")).lower() == value


async def main() -> None:
    rows: list[tuple[str, str]] = []
    await bench_speech(rows)
    await bench_llm(rows)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)}  value")
    print(f"{'-' * width}  -----")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    asyncio.run(main())
