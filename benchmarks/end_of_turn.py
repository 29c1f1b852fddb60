"""End of turn: the 0.6 s silence rule against smart-turn v3, on synthesized callers.

Each case is one utterance - spoken by espeak-ng (flat, robotic prosody) and by the Piper voice
`joe` (a natural voice) - framed by 0.5 s of silence before and 3 s after, and pushed through
voxline's own `Listener` (Silero VAD, Whisper tiny.en for the words) in 20 ms frames at
real-time pace, so the model's thread and the recognizer compete for the CPU as on a call.
Printed per case, voice and strategy: when the turn ended after the caller's last speech
("delay", seconds), when its final transcript was ready ("words": a reply needs both), the
model's probability that the turn was complete, the latest words the strategy had
(while-speaking or pause transcript), and a verdict: unfinished turns must not end before 1 s
("CUT"), finished ones should end sooner than the 0.6 s rule ("slow"). The machine's load
average is printed before and after: on a shared 2-core box Whisper's speed, and so every
number here, depends on it.

    .venv/bin/python benchmarks/end_of_turn.py            # every case, both voices
    .venv/bin/python benchmarks/end_of_turn.py --voice piper --only number
    .venv/bin/python benchmarks/end_of_turn.py --replay 0.35   # words as fast as when idle

On a busy machine Whisper's words come late for both rules (column "words"). `--replay`
separates the strategies from that: each turn's words are transcribed first, untimed, and then
handed out a fixed time after each request, while VAD, smart-turn and the listener run live.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from voxline.audio import SilenceEndOfTurn, read_wav
from voxline.audio.end_of_turn import EndOfTurnStrategy
from voxline.audio.resample import resample
from voxline.audio.smart_turn import SmartTurnEndOfTurn, SmartTurnModel
from voxline.audio.turn_taking import SpeechEnded, SpeechGate, TurnOptions
from voxline.providers.factory import create_stt, create_vad
from voxline.providers.stt.base import STT, Transcript
from voxline.voice.listener import Listener

RATE = 16_000
FRAME = 320  # 20 ms
CASES = [  # (text, finished?)
    ("My number is four one five", False),
    ("The account number is seven seven two", False),
    ("I'd like apples, pears and", False),
    ("Please send it to my email, which is john dot smith at", False),
    ("What is the capital of France?", True),
    ("What's the weather in Paris tomorrow?", True),
    ("Is the store open on Sunday?", True),
    ("Can you tell me my balance, please?", True),
    ("My number is four one five, five five five, zero one nine nine.", True),
    ("I'd like to book a table for two people at seven.", True),
]


def espeak(text: str, folder: Path) -> np.ndarray:
    path = folder / "case.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    voice = read_wav(path)
    return resample(voice.pcm, voice.sample_rate, RATE)


async def piper(text: str) -> np.ndarray:
    from voxline.providers.tts.piper import create_piper_tts

    tts = create_piper_tts()  # the voice's own prosody noise: natural, not repeatable
    pieces = [resample(chunk.pcm, chunk.sample_rate, RATE) async for chunk in tts.synthesize(text)]
    return np.concatenate(pieces)


def framed(pcm: np.ndarray) -> np.ndarray:
    """The synthesizer's own leading/trailing silence cut, then 0.5 s before and 3 s after."""
    loud = np.nonzero(np.abs(pcm.astype(np.int32)) > 300)[0]
    core = pcm[max(0, loud[0] - 800) : loud[-1] + 800] if len(loud) else pcm
    return np.concatenate([np.zeros(RATE // 2, np.int16), core, np.zeros(RATE * 3, np.int16)])


class ReplaySTT:
    """Whisper's own words for the turn's prefixes, transcribed before the timed run, each
    handed out `latency` seconds after it is asked for: the recognizer as fast as on an idle
    machine, whatever the load now. A request gets the words of the longest prefix on a grid
    of `GRID` seconds that it covers (so they may miss up to that much of its end)."""

    sample_rate = RATE
    label = "whisper:tiny.en (replayed)"

    def __init__(self, words: dict[int, Transcript], latency: float) -> None:
        self.words, self.latency = words, latency
        self.lengths = sorted(words)

    async def transcribe(self, pcm: np.ndarray, *, language: str | None = None) -> Transcript:
        await asyncio.sleep(self.latency)
        covered = [n for n in self.lengths if n <= len(pcm)]
        return self.words[covered[-1]] if covered else Transcript(text="")


GRID = 0.25


async def prefix_words(pcm: np.ndarray) -> dict[int, Transcript]:
    """Whisper's words for prefixes of the turn that `pcm` holds, as the listener will cut it
    (from its pre-roll): every `GRID` s from 0.75 s, and the whole turn as its first pause
    transcription (0.2 s of silence) sees it."""
    gate = SpeechGate(create_vad("local"), TurnOptions(end_of_turn_silence=0.6))
    ended = next(e for e in gate.push(pcm) if isinstance(e, SpeechEnded))
    turn = ended.audio.pcm
    spoken = round((ended.speech_end - ended.audio.timestamp + 0.2) * RATE)
    lengths = [*range(round(0.75 * RATE), spoken, round(GRID * RATE)), spoken]
    stt = create_stt("local")
    return {n: await stt.transcribe(turn[:n]) for n in lengths}


async def run_case(
    pcm: np.ndarray, strategy: EndOfTurnStrategy, stt: STT
) -> tuple[SpeechEnded, float] | None:
    """The turn's end, and the seconds from its last speech until its final transcript was
    ready (what a reply really waits for: the end of turn, and the words)."""
    listener = Listener(
        create_vad("local"),
        stt,
        input_rate=RATE,
        options=TurnOptions(end_of_turn_silence=0.6),
        end_of_turn=strategy,
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for n, offset in enumerate(range(0, len(pcm), FRAME)):
            for event in listener.push(pcm[offset : offset + FRAME]):
                if isinstance(event, SpeechEnded):
                    await listener.final_transcript(event)
                    return event, loop.time() - start - event.speech_end
            await asyncio.sleep(max(0.0, start + (n + 1) * FRAME / RATE - loop.time()))
        return None
    finally:
        listener.close()
        await asyncio.sleep(0.5)  # let a transcription still on the recognizer's thread end


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--voice", choices=["espeak", "piper", "both"], default="both")
    parser.add_argument("--only", default="", help="run the cases whose text contains this")
    parser.add_argument(
        "--replay",
        type=float,
        metavar="SECONDS",
        help="Whisper's words computed ahead and delivered this long after each request "
        "(the recognizer's speed on an idle machine), instead of live transcription",
    )
    args = parser.parse_args()
    SmartTurnModel.shared()
    create_stt("local").load()  # type: ignore[attr-defined]
    voices = ["espeak", "piper"] if args.voice == "both" else [args.voice]
    cases = [(text, done) for text, done in CASES if args.only.lower() in text.lower()]
    recognizer = "live" if args.replay is None else f"replayed after {args.replay} s"
    print(f"Whisper tiny.en words: {recognizer}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'voice':6} {'case':44} {'rule':11} {'delay':>5} {'words':>5}  p  verdict  heard")
    tally: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for voice in voices:
            for text, done in cases:
                spoken = espeak(text, Path(tmp)) if voice == "espeak" else await piper(text)
                pcm = framed(spoken)
                stt: STT = create_stt("local")
                if args.replay is not None:
                    stt = ReplaySTT(await prefix_words(pcm), args.replay)
                strategies: list[tuple[str, EndOfTurnStrategy]] = [
                    ("silence 0.6", SilenceEndOfTurn(0.6)),
                    ("smart-turn", SmartTurnEndOfTurn()),
                ]
                for name, strategy in strategies:
                    result = await run_case(pcm, strategy, stt)
                    delay, ready = float("nan"), float("nan")
                    if result is not None:
                        delay, ready = result[0].t - result[0].speech_end, result[1]
                    probs = getattr(strategy, "decisions", [])
                    p = " ".join(f"{x:.2f}" for x in probs) or "-"
                    ok = (delay > 1.0) if not done else (delay < 0.6)
                    verdict = "ok" if ok else ("CUT" if not done else "slow")
                    tally.setdefault(name, [0, 0])[0] += int(ok)
                    tally[name][1] += 1
                    words = ""
                    if isinstance(strategy, SmartTurnEndOfTurn):
                        words = repr(strategy.words)
                    print(
                        f"{voice:6} {text[:44]:44} {name:11} {delay:5.2f} {ready:5.2f}  {p:>4}  "
                        f"{verdict:7}  {words}",
                        flush=True,
                    )
    for name, (passed, total) in tally.items():
        print(f"{name}: {passed}/{total} cases ok")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
