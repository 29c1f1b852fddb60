"""Voice latency with the embedded models: caller speech in, first bot audio out.

    .venv/bin/python benchmarks/voice_latency.py [--runs 2] [--tools | --tool-turns]
        [--baseline | --compare] [--no-filler]
        [--silence SECONDS] [--end-of-turn silence|smart-turn]

Each utterance is synthesised with espeak-ng (or Piper when espeak-ng is missing), framed with
silence and streamed in real time through `VoicePipeline` (Silero VAD, Whisper tiny.en, the
local Qwen 1.5B, Piper), exactly as `voxline simulate` does. Prints p50/p95 of each stage, in
ms from the end of the caller's speech. `--tools` gives the agent a weather tool (the local
model then decides, in one constrained token, whether to speak or call it); `--tool-turns` asks
only weather questions, so every measured turn calls the tool and speaks its result.

A voice reply that calls a tool first says the agent's tool filler ("One moment.",
`turn.tool_filler`) as soon as the model names the tool. So with tools, `first_audio` and
`voice_to_voice` are the filler's when one was said, and two more rows time the answer itself:
`answer_first_audio` (its first TTS audio synthesised) and `answer_heard` (when it starts to
play: after the filler has played, if it was ready sooner; estimated from the filler's audio
length, as the speaker plays turns one after the other in real time). `--no-filler` turns the
filler off, for the answer's timing without it.

By default the pipeline runs as shipped: a speculative reply started at the caller's pause and
the reply's opening phrase spoken at its first clause. `--baseline` turns both off (the model
starts when the turn ends, TTS waits for the first whole sentence); `--compare` runs every
utterance both ways, alternating, so a busy machine's load falls on both alike, and prints a
table for each. The load average is printed at the start and the end. `--silence` sets the
end-of-turn silence: on a machine so busy that transcribing the pause takes longer than the
default 0.6 s wait, no guess can start in time, and a longer wait shows what a guess saves.
`--end-of-turn smart-turn` gives the agent the semantic end of turn (`audio/smart_turn.py`)
instead of the silence rule.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxline import Agent, tool
from voxline.audio import AudioFrame, read_wav, resample
from voxline.conversation.filler import DEFAULT_PHRASE
from voxline.providers.llm.registry import create_llm
from voxline.providers.tts.base import TTS, AudioChunk
from voxline.settings import Settings
from voxline.simulate import simulate_call
from voxline.text.sentences import split_sentences
from voxline.voice.metrics import STAGES, TurnLatency, percentile
from voxline.voice.pipeline import VoiceOptions
from voxline.voice.providers import load_speech_providers

UTTERANCES = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Tell me something nice about dogs.",
    "What's the weather in Paris tomorrow?",
    "Can you recommend a good book?",
]
# `--tool-turns`: questions the weather tool answers, so every turn is a tool turn (decision,
# call, result, then the spoken answer); implies `--tools`.
TOOL_UTTERANCES = [
    "What's the weather in Paris tomorrow?",
    "How is the weather in Berlin today?",
    "Will it rain in London this weekend?",
    "What's the temperature in Madrid right now?",
    "Is it sunny in Rome today?",
]
INSTRUCTIONS = "You are a voice assistant on the phone. Answer in one short sentence."
VARIANTS = {
    "shipped": VoiceOptions(),
    "baseline": VoiceOptions(speculate=False, first_chunk_words=None),
}


FORECASTS = {"paris": "sunny, 22 degrees", "berlin": "cloudy, 14 degrees", "rome": "sunny, 27"}


@tool
def get_weather(city: str, day: str = "today") -> str:
    """Get the weather forecast for a city.

    Args:
        city: The city name, e.g. "Paris".
        day: "today" or "tomorrow".
    """
    return f"{city} {day}: {FORECASTS.get(city.lower(), 'dry, 18 degrees, light wind')}"


@dataclass
class Spoken:
    """One text the voice was asked to say: when its first audio came out, and how long it is."""

    text: str
    first_audio: float | None = None  # time.monotonic(), the pipeline clock's time
    seconds: float = 0.0


class TimedTTS:
    """The voice, noting each text's first audio, so the filler and the answer are told apart
    (the pipeline's own probe stops at the first audio of the turn)."""

    def __init__(self, tts: TTS) -> None:
        self.label = tts.label
        self.sample_rate = tts.sample_rate
        self._tts = tts
        self.spoken: list[Spoken] = []

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        said = Spoken(text)
        self.spoken.append(said)
        chunks = self._tts.synthesize(text, voice=voice)
        try:
            async for chunk in chunks:
                if said.first_audio is None and len(chunk.pcm):
                    said.first_audio = time.monotonic()
                said.seconds += len(chunk.pcm) / chunk.sample_rate
                yield chunk
        finally:  # a barge-in closes this stream: close the voice's too
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()


@dataclass
class AnswerTiming:
    """Seconds from the end of the caller's speech to the answer (what follows the filler)."""

    answer_first_audio: float | None
    answer_heard: float | None
    filler: bool


def answer_timing(turn: TurnLatency, spoken: list[Spoken], filler: str) -> AnswerTiming:
    said_filler = [s for s in spoken if s.text.strip() == filler and s.first_audio is not None]
    answer = [s.first_audio for s in spoken if s.text.strip() != filler and s.first_audio]
    if not answer:
        return AnswerTiming(None, None, bool(said_filler))
    first = min(answer) - turn.speech_end
    if not said_filler:  # no filler: the answer is the turn's first audio
        return AnswerTiming(first, turn.voice_to_voice, False)
    filler_end = (
        None if turn.voice_to_voice is None else turn.voice_to_voice + said_filler[0].seconds
    )
    heard = first if filler_end is None else max(first, filler_end)
    return AnswerTiming(first, heard, True)


async def speak(text: str, tts: TTS) -> AudioFrame:
    """The caller saying `text`, with 0.5 s of silence before and 1.5 s after."""
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "caller.wav"
            espeak = await asyncio.create_subprocess_exec("espeak-ng", "-w", str(path), text)
            if await espeak.wait():
                raise RuntimeError(f"espeak-ng failed on {text!r}")
            voice = read_wav(path)
        pcm, rate = voice.pcm, voice.sample_rate
    else:
        chunks = [chunk.pcm async for chunk in tts.synthesize(text)]
        pcm, rate = np.concatenate(chunks), tts.sample_rate
    pcm = resample(pcm, rate, 16000)
    silence = np.zeros(8000, dtype=np.int16)
    return AudioFrame(np.concatenate([silence, pcm, silence, silence, silence]), 16000)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="passes over the utterances")
    parser.add_argument("--tools", action="store_true", help="give the agent a weather tool")
    parser.add_argument(
        "--tool-turns",
        action="store_true",
        help="ask only weather questions, so every turn calls the tool (implies --tools)",
    )
    parser.add_argument(
        "--no-filler", action="store_true", help="no spoken filler while a tool call runs"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--baseline", action="store_true", help="no speculative reply, whole first sentence"
    )
    which.add_argument("--compare", action="store_true", help="run shipped and baseline alike")
    parser.add_argument(
        "--silence",
        type=float,
        default=None,
        help="the agent's end-of-turn silence in seconds (default: the agent default, 0.6)",
    )
    parser.add_argument(
        "--end-of-turn",
        choices=["silence", "smart-turn"],
        default="silence",
        help="the agent's turn.end_of_turn (smart-turn needs the smart-turn extra)",
    )
    args = parser.parse_args()
    names = (
        ["shipped", "baseline"] if args.compare else ["baseline" if args.baseline else "shipped"]
    )
    print(f"load average at start: {_load()}")
    settings = Settings()
    tools: list[object] = []
    utterances = TOOL_UTTERANCES if args.tool_turns else UTTERANCES
    if args.tools or args.tool_turns:
        tools = [get_weather]
    turn: dict[str, object] = {} if args.silence is None else {"end_of_turn_silence": args.silence}
    filler = "" if args.no_filler else DEFAULT_PHRASE
    turn["tool_filler"] = {"phrase": filler}
    turn["end_of_turn"] = args.end_of_turn
    agent = Agent(name="bench", instructions=INSTRUCTIONS, llm="local", tools=tools, turn=turn)  # type: ignore[arg-type]
    speech = await load_speech_providers(agent.spec)
    llm = create_llm("local", settings)
    callers = [await speak(text, speech.tts) for text in utterances]
    turns: dict[str, list[TurnLatency]] = {name: [] for name in names}
    answers: dict[str, list[AnswerTiming]] = {name: [] for name in names}
    for run in range(args.runs):
        for text, caller in zip(utterances, callers, strict=True):
            for name in names:
                voice = TimedTTS(speech.tts)
                timed = dataclasses.replace(speech, tts=voice)
                result = await simulate_call(
                    caller, agent, timed, settings=settings, llm=llm, options=VARIANTS[name]
                )
                turns[name] += result.latencies
                answers[name] += [answer_timing(t, voice.spoken, filler) for t in result.latencies]
                reply = next((t for who, t in reversed(result.transcript) if who == "agent"), "")
                v2v = (
                    result.latencies[0].milliseconds()["voice_to_voice_ms"]
                    if result.latencies
                    else None
                )
                print(f"run {run + 1} {name}: {text!r} -> {reply[:60]!r} (voice to voice {v2v} ms)")
                first = split_sentences(reply, first_words=VARIANTS[name].first_chunk_words)
                opening = first[0] if first else ""
                timing = answers[name][-1] if tools and result.latencies else None
                if timing is not None and timing.filler:  # the first audio was the filler
                    answer, heard = _ms(timing.answer_first_audio), _ms(timing.answer_heard)
                    print(f"    first audio: the filler {filler!r}; the answer's {answer} ms")
                    print(f"    the answer heard from {heard} ms, its audio waited for {opening!r}")
                else:
                    print(f"    first audio waited for: {opening!r}")
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; agent tools: {len(tools)}; "
        f"end of turn: {args.end_of_turn}; load average at end: {_load()}"
    )
    for name in names:
        print(f"\n{name} ({len(turns[name])} turns)")
        print(f"{'stage (ms from end of speech)':<32} {'p50':>6} {'p95':>6} {'n':>3}")
        for stage in STAGES:
            values = [v for t in turns[name] if (v := getattr(t, stage)) is not None]
            label = f"{stage} (filler if said)" if tools and stage in FILLER_STAGES else stage
            _row(label, values)
        if tools:
            fillers = sum(a.filler for a in answers[name])
            print(f"answer (after the filler, said in {fillers} of {len(answers[name])} turns):")
            for stage in ("answer_first_audio", "answer_heard"):
                _row(stage, [v for a in answers[name] if (v := getattr(a, stage)) is not None])


FILLER_STAGES = ("first_audio", "voice_to_voice")


def _row(label: str, values: list[float]) -> None:
    if values:
        p50, p95 = percentile(values, 50), percentile(values, 95)
        print(f"{label:<32} {p50 * 1000:>6.0f} {p95 * 1000:>6.0f} {len(values):>3}")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _load() -> str:
    """The 1, 5 and 15 minute load averages: numbers from a busy machine say so."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    asyncio.run(main())
