"""End of speech → first audio through `/v1/realtime`, side by side with the cascaded pipeline.

    .venv/bin/python benchmarks/realtime_latency.py [--llm fake] [--utterances 5]

Starts a voxline server in-process on a free loopback port (the embedded local models: Silero
VAD, Whisper tiny.en, Piper and, unless `--llm fake`, the local Qwen), then streams each
espeak-ng question in real time (PCM16 at 24 kHz, 20 ms chunks) through the official `openai`
SDK's Realtime connection with server VAD, and times end of speech (the moment the chunk with
the last speech sample was sent) → the first `response.output_audio.delta`. Then the same
agent answers the same utterances on the cascaded pipeline directly (`simulate_call`, as
`voice_latency.py` does), timed the same way on the call's timeline: end of the last speech
chunk → first bot audio handed to the channel. `--llm fake` answers with a scripted sentence
so the whole run takes seconds. One unmeasured warm-up turn goes first on each path.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
from openai import AsyncOpenAI

from voice_latency import INSTRUCTIONS, UTTERANCES, speak
from voxline import Agent
from voxline.audio import AudioFrame, resample
from voxline.providers.llm.base import LLM
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.providers.llm.registry import create_llm
from voxline.server import ServerConfig, create_app
from voxline.server.runner import build_server
from voxline.settings import Settings
from voxline.simulate import FRAME, simulate_call
from voxline.store.sql import SqlStore
from voxline.voice.metrics import percentile
from voxline.voice.providers import SpeechProviders, load_speech_providers

AGENT = "bench"
API_KEY = "realtime-latency-bench"
RATE = 24000  # the Realtime default: PCM16 at 24 kHz
CHUNK = round(RATE * FRAME)  # 20 ms
SPEECH = 100  # |sample| above this is speech, on both paths
ANSWER = "Sure, here is a short answer for you."
TAIL = 30.0  # seconds to wait for a reply after the speech ends
SESSION: dict[str, Any] = {
    "type": "realtime",
    "audio": {
        # no silence_duration_ms: the agent's own end-of-turn silence, as on the cascaded path
        "input": {
            "format": {"type": "audio/pcm", "rate": RATE},
            "turn_detection": {"type": "server_vad"},
        },
        "output": {"format": {"type": "audio/pcm", "rate": RATE}},
    },
}


def speech_end(pcm: npt.NDArray[np.int16], chunk: int) -> int:
    """The end (in samples) of the chunk that holds the last speech sample."""
    [loud] = np.nonzero(np.abs(pcm.astype(np.int32)) > SPEECH)
    last = int(loud[-1]) + 1
    return -(-last // chunk) * chunk


async def through_endpoint(base: str, pcm: npt.NDArray[np.int16]) -> tuple[float | None, str]:
    """Seconds from the last speech chunk sent to the first audio delta, and the reply."""
    end = speech_end(pcm, CHUNK)
    client = AsyncOpenAI(base_url=f"{base}/v1", api_key=API_KEY)
    sent_end: float | None = None
    first: float | None = None
    reply: list[str] = []
    done = asyncio.Event()
    async with client.realtime.connect(model=AGENT) as conn:
        ready = asyncio.Event()

        async def read() -> None:
            nonlocal first
            async for event in conn:
                if event.type == "session.updated":
                    ready.set()
                elif event.type == "response.output_audio.delta":
                    if first is None and sent_end is not None:
                        first = time.monotonic()
                elif event.type == "response.output_audio_transcript.delta":
                    if sent_end is not None:
                        reply.append(event.delta)
                elif event.type == "response.done" and first is not None:
                    done.set()
                elif event.type == "error":
                    print(f"  error event: {event.error.message}", file=sys.stderr)

        reader = asyncio.create_task(read())
        try:
            await conn.session.update(session=SESSION)  # type: ignore[arg-type]
            await asyncio.wait_for(ready.wait(), 10)
            start = time.monotonic()
            offset = 0
            silence = base64.b64encode(bytes(2 * CHUNK)).decode()
            while not done.is_set():
                if offset < len(pcm):
                    piece = pcm[offset : offset + CHUNK].astype("<i2").tobytes()
                    audio = base64.b64encode(piece).decode()
                else:  # the microphone stays open: silence until the reply is done
                    audio = silence
                await conn.input_audio_buffer.append(audio=audio)
                offset += CHUNK
                if sent_end is None and offset >= end:
                    sent_end = time.monotonic()
                if sent_end is not None and time.monotonic() - sent_end > TAIL:
                    break
                delay = start + offset / RATE - time.monotonic()
                await asyncio.sleep(max(0.0, delay))
        finally:
            reader.cancel()
    latency = None if first is None or sent_end is None else first - sent_end
    return latency, "".join(reply)


async def cascaded(
    caller: AudioFrame, agent: Agent, speech: SpeechProviders, settings: Settings, llm: LLM
) -> tuple[float | None, str]:
    """The same, on the pipeline directly: on the call's timeline (offset 0 = the call starts,
    caller audio pushed in real time in 20 ms chunks), the end of the last speech chunk → the
    first bot audio handed to the channel."""
    result = await simulate_call(caller, agent, speech, settings=settings, llm=llm)
    end = speech_end(caller.pcm, round(caller.sample_rate * FRAME)) / caller.sample_rate
    start = round(end * result.sample_rate)
    [sound] = np.nonzero(result.audio[start:])
    reply = next((t for who, t in reversed(result.transcript) if who == "agent"), "")
    return (float(sound[0]) / result.sample_rate if len(sound) else None), reply


def free_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def row(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<28} {'-':>6} {'-':>6} {'-':>6} {0:>3}"
    p50, p95, mean = percentile(values, 50), percentile(values, 95), statistics.fmean(values)
    return f"{name:<28} {p50 * 1000:>6.0f} {p95 * 1000:>6.0f} {mean * 1000:>6.0f} {len(values):>3}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--llm", choices=["local", "fake"], default="local")
    parser.add_argument("--utterances", type=int, default=5, help="questions (at most 5)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    load = os.getloadavg()
    texts = UTTERANCES[: args.utterances]
    with tempfile.TemporaryDirectory(prefix="voxline-rt-bench-") as scratch:
        settings = Settings(data_dir=Path(scratch), api_key=API_KEY, llm=args.llm)  # type: ignore[arg-type]
        agent = Agent(name=AGENT, instructions=INSTRUCTIONS)
        llm: LLM = (
            FakeLLM(lambda request: FakeReply(ANSWER))
            if args.llm == "fake"
            else create_llm("local", settings)
        )
        speech = await load_speech_providers(agent.spec)
        callers = [await speak(text, speech.tts) for text in [*texts[:1], *texts]]
        store = SqlStore(f"sqlite+aiosqlite:///{Path(scratch) / 'server.db'}")
        await store.open()
        app = create_app(
            ServerConfig(agents=[agent], settings=settings, llm=lambda _: llm, store=store)
        )
        sock = free_port()
        server = build_server(
            app, host="127.0.0.1", port=sock.getsockname()[1], log_level="warning"
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        endpoint: list[float] = []
        direct: list[float] = []
        try:
            for n, (text, caller) in enumerate(zip([texts[0], *texts], callers, strict=True)):
                pcm = resample(caller.pcm, caller.sample_rate, RATE)
                latency, reply = await through_endpoint(base, pcm)
                tag = "warm-up" if n == 0 else f"{n}"
                print(f"endpoint {tag}: {text!r} -> {reply[:50]!r} ({_ms(latency)})")
                if n and latency is not None:
                    endpoint.append(latency)
        finally:
            server.should_exit = True
            await serving
            sock.close()
            await store.close()
        for n, (text, caller) in enumerate(zip([texts[0], *texts], callers, strict=True)):
            latency, reply = await cascaded(caller, agent, speech, settings, llm)
            tag = "warm-up" if n == 0 else f"{n}"
            print(f"cascaded {tag}: {text!r} -> {reply[:50]!r} ({_ms(latency)})")
            if n and latency is not None:
                direct.append(latency)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; load average at start {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}; llm: {args.llm}"
    )
    print(f"{'end of speech -> first audio':<28} {'p50':>6} {'p95':>6} {'mean':>6} {'n':>3}")
    print(row("/v1/realtime (openai SDK)", endpoint))
    print(row("cascaded pipeline", direct))
    if endpoint and direct:
        diffs = [
            percentile(endpoint, 50) - percentile(direct, 50),
            percentile(endpoint, 95) - percentile(direct, 95),
            statistics.fmean(endpoint) - statistics.fmean(direct),
        ]
        print(f"{'endpoint overhead':<28} " + " ".join(f"{d * 1000:>+6.0f}" for d in diffs))


def _ms(latency: float | None) -> str:
    return "no audio" if latency is None else f"{latency * 1000:.0f} ms"


if __name__ == "__main__":
    asyncio.run(main())
