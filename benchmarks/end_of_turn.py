"""End of turn: the 0.6 s silence rule against smart-turn v3, on synthesized callers.

Each case is one espeak-ng utterance followed by 3 s of silence, pushed through voxline's own
`Listener` (Silero VAD, Whisper tiny.en for the early transcript of each pause) in 20 ms frames
at real-time pace, so the model's thread and the recognizer compete for the CPU as on a call.
Printed per case and strategy: when the turn ended after the caller's last speech ("delay"),
and the model's probability that the turn was complete. Unfinished cases must wait (not be cut
at 0.6 s); complete questions should end sooner than 0.6 s.

    .venv/bin/python benchmarks/end_of_turn.py
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from voxline.audio import SilenceEndOfTurn, read_wav
from voxline.audio.end_of_turn import EndOfTurnStrategy
from voxline.audio.resample import resample
from voxline.audio.smart_turn import SmartTurnEndOfTurn, SmartTurnModel
from voxline.audio.turn_taking import SpeechEnded, TurnOptions
from voxline.providers.factory import create_stt, create_vad
from voxline.voice.listener import Listener

RATE = 16_000
FRAME = 320  # 20 ms
CASES = [  # (text, finished?)
    ("My number is four one five", False),
    ("I'd like apples, pears and", False),
    ("Please send it to my email, which is john dot smith at", False),
    ("The account number is seven seven two", False),
    ("What is the capital of France?", True),
    ("What's the weather in Paris tomorrow?", True),
    ("Is the store open on Sunday?", True),
    ("Can you tell me my balance, please?", True),
]


def speak(text: str, folder: Path) -> np.ndarray:
    path = folder / "case.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    voice = read_wav(path)
    pcm = resample(voice.pcm, voice.sample_rate, RATE)
    return np.concatenate([np.zeros(RATE // 2, np.int16), pcm, np.zeros(RATE * 3, np.int16)])


async def run_case(pcm: np.ndarray, strategy: EndOfTurnStrategy) -> SpeechEnded | None:
    listener = Listener(
        create_vad("local"),
        create_stt("local"),
        input_rate=RATE,
        options=TurnOptions(end_of_turn_silence=0.6),
        end_of_turn=strategy,
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, offset in enumerate(range(0, len(pcm), FRAME)):
        for event in listener.push(pcm[offset : offset + FRAME]):
            if isinstance(event, SpeechEnded):
                return event
        await asyncio.sleep(max(0.0, start + (n + 1) * FRAME / RATE - loop.time()))
    return None


async def main() -> None:
    SmartTurnModel.shared()
    create_stt("local").load()  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        audio = [(text, done, speak(text, Path(tmp))) for text, done in CASES]
        print(f"{'case':58} {'rule':12} {'delay':>6}  p(complete)  verdict")
        for text, done, pcm in audio:
            strategies: list[tuple[str, EndOfTurnStrategy]] = [
                ("silence 0.6", SilenceEndOfTurn(0.6)),
                ("smart-turn", SmartTurnEndOfTurn()),
            ]
            for name, strategy in strategies:
                ended = await run_case(pcm, strategy)
                delay = ended.t - ended.speech_end if ended else float("nan")
                probs = getattr(strategy, "decisions", [])
                p = " ".join(f"{x:.2f}" for x in probs) or "-"
                ok = (delay > 1.0) if not done else (delay < 0.6)
                verdict = "ok" if ok else ("CUT" if not done else "slow")
                print(f"{text[:58]:58} {name:12} {delay:6.2f}  {p:11}  {verdict}")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
