"""What a listening call costs in voxline and in the equivalent Pipecat pipeline, on one core.

N concurrent calls per run, each fed 20 ms frames of 8 kHz mu-law on a real-time schedule by
its own asyncio task (mostly line noise, one utterance per `--turn-every` seconds), with instant
STT, LLM and TTS so only the frameworks' own work is measured. Each run is a fresh process pinned
to one core (every thread of it: voxline's VAD worker thread shares that core with the event
loop). Per run it reports the process CPU per call: CPU time of the whole process, all threads
(`time.process_time`), per wall second of the measured window, divided by the calls, as percent
of that one core; and the frame lateness (frame due -> all its inbound work done, the VAD's
decision on every window the frame completed included) at p50/p99. The concurrency ramps
through `--sessions` until frames fall behind (p99 later than one frame, or the core over 95%
busy), then bisects between the last good and the first bad count: that is the calls per core.
Audio held inside the 8 -> 16 kHz stream resampler (soxr "HQ" releases it in ~104 ms blocks, in
both frameworks) is not counted as lateness; each call's resampler is put at its own phase
before the run (`_voxline_calls.RESAMPLER_PHASES`), as calls started at unrelated moments are.

    python benchmarks/pipeline_overhead.py [--sessions 10,25,50,100,200,400] [--seconds 10]
        [--vad scripted|silero] [--turn-every 10] [--core N] [--vad-costs] [--gather-ms MS]
        [--max-batch N] [--worker-from N]

With `--vad silero` it first prints what one 32 ms window costs: both sides' models inline, and
voxline's batched at several batch sizes (calls whose windows share one inference), then a
lone call's time from a window's arrival to its gate decision, inline and batched (the batch
must not slow one call down). `--vad-costs` prints only that.

Needs `pipecat-ai` for the comparison (without it only voxline runs) and `espeak-ng` for a real
utterance (else speech-shaped noise, which only the scripted VAD takes for speech).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from _callers import (
    FRAME_SECONDS,
    Push,
    RunResult,
    Script,
    Timings,
    caller_script,
    drive,
    summarise,
)

FRAMEWORKS = ("voxline", "pipecat")
SATURATED = 0.95  # share of the core beyond which a run counts as behind even if on time
NOISE_BELOW = 0.5  # a late run using less of the core than this is run again (see measure)


def behind(result: RunResult) -> bool:
    return result.p99_ms > FRAME_SECONDS * 1000 or result.core_share >= SATURATED


# -- one run, in a pinned child process ------------------------------------------------------


async def run_idle_callers(
    sessions: int, script: Script, vad_kind: str, *, warmup: float, seconds: float
) -> RunResult:
    """The harness alone: caller tasks waking every 20 ms and doing nothing else."""
    loop = asyncio.get_running_loop()
    timings = Timings()

    async def push(payload: bytes, deadline: float) -> None:
        timings.record(deadline, loop.time())

    pushes: list[Push] = [push] * sessions
    wall, cpu = await drive(pushes, script, timings, warmup=warmup, seconds=seconds)
    return summarise("harness", sessions, wall, cpu, timings, 0)


def quiet_logs() -> None:
    """Warnings only, on both sides: Pipecat logs each turn at DEBUG (and a banner at import)
    by default, voxline each turn's latency at INFO."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    from voxline.logging import configure_logging

    configure_logging("WARNING")


def child(spec: str, args: argparse.Namespace) -> None:
    """Runs `FRAMEWORK:N` and prints its result as JSON on the last line."""
    quiet_logs()
    framework, count = spec.split(":")
    runner: Callable[..., Coroutine[Any, Any, RunResult]]
    if framework == "voxline":
        import _voxline_calls

        _voxline_calls.GATHER_MS = args.gather_ms
        _voxline_calls.UNBATCHED = args.unbatched
        _voxline_calls.MAX_BATCH = args.max_batch
        _voxline_calls.WORKER_FROM = args.worker_from
        runner = _voxline_calls.run_voxline
    elif framework == "pipecat":
        from _pipecat_calls import run_pipecat as runner
    else:
        runner = run_idle_callers
    script = caller_script(args.turn_every)
    coroutine = runner(int(count), script, args.vad, warmup=args.warmup, seconds=args.seconds)
    result = asyncio.run(coroutine)
    print(json.dumps(dataclasses.asdict(result)))


def run(framework: str, sessions: int, args: argparse.Namespace) -> RunResult:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        f"{framework}:{sessions}",
        *["--seconds", str(args.seconds), "--warmup", str(args.warmup)],
        *["--vad", args.vad, "--turn-every", str(args.turn_every)],
        *(["--gather-ms", str(args.gather_ms)] if args.gather_ms is not None else []),
        *(["--unbatched"] if args.unbatched else []),
        *(["--max-batch", str(args.max_batch)] if args.max_batch else []),
        *(["--worker-from", str(args.worker_from)] if args.worker_from else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{framework} x{sessions} failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    result = RunResult(**json.loads(lines[-1]))
    for note in (line for line in lines[:-1] if line.startswith("#")):
        print(f"    {note}", flush=True)
    print(
        f"  {framework:<8} x{sessions:<5} {result.per_session:6.3f}% of a core per call, "
        f"core {result.core_share:4.0%}, p50 {result.p50_ms:7.2f} ms, "
        f"p99 {result.p99_ms:8.2f} ms, turns {result.turns}"
        + ("  BEHIND" if behind(result) else ""),
        flush=True,
    )
    return result


def quietest_core(sample: float = 1.0) -> int:
    """The allowed CPU with the most idle time over `sample` seconds: the machine is shared,
    and a run pinned to a busy core measures the neighbours' load as lateness."""
    allowed = os.sched_getaffinity(0)

    def idle() -> dict[int, int]:
        times = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in allowed:
                times[int(name[3:])] = int(fields[3]) + int(fields[4])  # idle + iowait
        return times

    before = idle()
    time.sleep(sample)
    after = idle()
    return max(after, key=lambda cpu: after[cpu] - before.get(cpu, 0))


# -- the ramp --------------------------------------------------------------------------------


def measure(framework: str, sessions: int, args: argparse.Namespace) -> RunResult:
    """One run, repeated up to `--retries` times while it is behind with the core mostly
    idle: on a shared machine that is usually a neighbour's burst, and a framework that is
    really late with CPU to spare stays late when run again. Keeps the run with the best p99."""
    result = run(framework, sessions, args)
    for _ in range(args.retries):
        if not behind(result) or result.core_share >= NOISE_BELOW:
            break
        print("    late with the core mostly idle: running it again", flush=True)
        result = min(result, run(framework, sessions, args), key=lambda r: r.p99_ms)
    return result


def ramp(
    framework: str, counts: list[int], args: argparse.Namespace
) -> tuple[list[RunResult], int]:
    """Runs the listed counts up to the first that falls behind, then bisects `--refine` times
    between it and the last count that kept up. Returns the runs and the most sessions kept up
    (0 when even the first count fell behind; the last count when none did)."""
    results: list[RunResult] = []
    good, bad = 0, 0
    for count in counts:
        result = measure(framework, count, args)
        results.append(result)
        if behind(result):
            bad = bad or count
            if not args.all_counts:
                break
        elif not bad:
            good = count
    for _ in range(args.refine if bad else 0):
        middle = (good + bad) // 2
        if middle in (good, bad):
            break
        result = measure(framework, middle, args)
        results.append(result)
        if behind(result):
            bad = middle
        else:
            good = middle
    return results, good


# -- what differs between the two sides ------------------------------------------------------


def silero_costs(chunks: int = 500) -> tuple[float, float]:
    """Microseconds per 32 ms window for each side's Silero model, called inline: voxline's v6
    (from faster-whisper) and the v5 file Pipecat ships. They are different model versions."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer

    from voxline.providers.vad.silero import create_silero_vad

    windows = _noise_windows(chunks)
    stream = create_silero_vad().stream()
    analyzer = SileroVADAnalyzer(sample_rate=16000)
    analyzer.set_sample_rate(16000)
    costs = []
    for process in (stream.process, lambda w: analyzer.voice_confidence(w.tobytes())):
        for window in windows[:20]:
            process(window)
        start = time.process_time()
        for window in windows:
            process(window)
        costs.append((time.process_time() - start) / chunks * 1e6)
    return costs[0], costs[1]


def _noise_windows(chunks: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    audio = np.random.default_rng(3).normal(0, 2000, 512 * chunks).astype(np.int16)
    return audio.reshape(chunks, 512)


BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def batched_silero_costs(sizes: tuple[int, ...] = BATCH_SIZES) -> dict[int, float]:
    """Microseconds per window when `size` calls' windows run as one inference (voxline's v6,
    rewritten to batch), scheduling and per-call state handling included."""
    from voxline.providers.vad.silero import create_silero_vad

    vad = create_silero_vad()

    async def measure(size: int) -> float:
        streams = [vad.batched_stream(lambda p: None) for _ in range(size)]
        scheduler = vad.schedulers.current()
        windows = _noise_windows(64)
        rounds = max(20, 4000 // size)
        spent = 0.0
        for index in range(rounds + 5):
            start = time.process_time()
            for stream in streams:
                assert stream is not None
                stream.submit(windows[index % len(windows)])
            scheduler.run()
            if index >= 5:  # warm-up rounds left out
                spent += time.process_time() - start
        return spent / rounds / size * 1e6

    return {size: asyncio.run(measure(size)) for size in sizes}


def single_call_latency(windows: int = 200) -> tuple[list[float], list[float]]:
    """A lone call's time from a frame that completes a window arriving to its gate decision,
    in microseconds: inline (the VAD runs inside `push`) and batched (the decision comes when
    the call's batch has run, seen by `TimedVAD`). Two gates take the same frames 10 ms apart,
    each every 20 ms as on a phone line, so each window is a batch of one and a load burst on
    the machine hits both alike."""
    from _voxline_calls import TimedVAD
    from voxline.audio.turn_taking import SpeechGate
    from voxline.providers.vad.silero import create_silero_vad

    vad = create_silero_vad()
    audio = _noise_windows(windows).reshape(-1)
    frames = [audio[i : i + 320] for i in range(0, len(audio) - 319, 320)]

    async def lone_calls() -> tuple[list[float], list[float]]:
        inline_times: list[float] = []
        batched_times: list[float] = []

        def decided(arrived: float) -> None:
            batched_times.append((time.perf_counter() - arrived) * 1e6)

        timed = TimedVAD(vad, decided)
        inline = SpeechGate(vad)
        batched = SpeechGate(timed, on_events=lambda events: None)
        assert batched.batched and not inline.batched
        for frame in frames:
            await asyncio.sleep(0.01)
            arrived = time.perf_counter()
            before = inline.time
            inline.push(frame)
            if inline.time > before:  # a window was decided inline
                inline_times.append((time.perf_counter() - arrived) * 1e6)
            await asyncio.sleep(0.01)
            answered = timed.submitted
            arrived = time.perf_counter()
            batched.push(frame)
            if timed.submitted > answered:  # the frame completed a window
                timed.track(arrived)
        await asyncio.sleep(0.01)
        batched.close()
        return inline_times[5:], batched_times[5:]

    return asyncio.run(lone_calls())


def print_vad_costs() -> None:
    ours, theirs = silero_costs()
    print(
        f"Silero per 32 ms window, inline: voxline v6 {ours:.0f} µs, "
        f"Pipecat's bundled v5 {theirs:.0f} µs"
    )
    costs = batched_silero_costs()
    print("voxline v6 batched across calls, µs per window (CPU):")
    print("  " + "  ".join(f"{size:>5}" for size in costs) + "   <- calls in the batch")
    print("  " + "  ".join(f"{cost:>5.0f}" for cost in costs.values()))
    inline, batched = single_call_latency()
    for label, values in (("inline", inline), ("batched", batched)):
        p50, p99 = np.percentile(values, [50, 99])
        print(
            f"a lone call, window arrival -> gate decision, {label:<7}: "
            f"p50 {p50:6.0f} µs, p99 {p99:6.0f} µs ({len(values)} windows)"
        )
    print()


# -- report ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fit:
    """Process CPU against sessions, a straight line through the runs that left the core some
    idle time (late frames do not matter here: all the work was still done). The slope is what
    one more call costs, free of the fixed cost of a mostly idle process (on this VM a process
    woken 50 times a second already pays ~1% of a core for the wake-ups)."""

    slope: float  # share of a core per session
    intercept: float

    @classmethod
    def of(cls, results: list[RunResult]) -> Fit:
        usable = [r for r in results if r.core_share < SATURATED] or results[:1]
        if len(usable) < 2:
            return cls(usable[0].core_share / usable[0].sessions, 0.0)
        slope, intercept = np.polyfit(
            [r.sessions for r in usable], [r.core_share for r in usable], 1
        )
        return cls(float(slope), float(intercept))

    @property
    def capacity(self) -> int:
        """Sessions at which the line reaches a saturated core."""
        return int((SATURATED - self.intercept) / self.slope)


def table(runs: dict[str, list[RunResult]]) -> None:
    counts = sorted({r.sessions for results in runs.values() for r in results})
    by = {fw: {r.sessions: r for r in results} for fw, results in runs.items()}
    print("\nsessions | " + " | ".join(f"{fw:^35}" for fw in runs))
    head = f"{'%core/call':>10} {'p50 ms':>7} {'p99 ms':>8} {'turns':>6}"
    print("         | " + " | ".join(f"{head} " for _ in runs))
    for count in counts:
        cells = []
        for fw in runs:
            r = by[fw].get(count)
            if r is None:
                cells.append(f"{'-':>35}")
                continue
            mark = "!" if behind(r) else " "
            cells.append(
                f"{r.per_session:>9.3f}% {r.p50_ms:>7.2f} {r.p99_ms:>8.2f} {r.turns:>6}{mark}"
            )
        print(f"{count:>8} | " + " | ".join(cells))
    print("! = behind: p99 later than one frame (20 ms), or the core over 95% busy")
    print(
        "%core/call: process CPU time, all threads (time.process_time), per wall second, / calls;"
        "\nevery run is one process pinned to one core, so calls kept up = calls per core"
    )


def summary(runs: dict[str, list[RunResult]], capacity: dict[str, int], harness: Fit) -> None:
    fits = {fw: Fit.of(results) for fw, results in runs.items()}
    print(f"\n{'':<9} {'kept up to':>10} {'CPU per extra call':>19} {'projected per core':>19}")
    for fw, fit in fits.items():
        tried = max(r.sessions for r in runs[fw])
        most = f"{capacity[fw]}{'+' if capacity[fw] == tried else ''}"
        print(f"{fw:<9} {most:>10} {fit.slope * 100:>18.3f}% {fit.capacity:>19}")
    print(f"{'harness':<9} {'':>10} {harness.slope * 100:>18.3f}%   (caller tasks alone)")
    print("(+: never fell behind; raise --sessions to find the limit)")
    if "pipecat" in fits and "voxline" in fits and capacity["pipecat"]:
        measured = capacity["voxline"] / capacity["pipecat"]
        projected = fits["voxline"].capacity / fits["pipecat"].capacity
        print(
            f"\nsessions per core, voxline / pipecat: {measured:.1f}x measured, "
            f"{projected:.1f}x projected from CPU"
        )
    if "voxline" in fits:
        own = (fits["voxline"].slope - harness.slope) * 100
        print(f"voxline per call without the harness's wake-ups: {own:.3f}% of a core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="10,25,50,100,200,400", help="concurrency ramp")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--vad", choices=["scripted", "silero"], default="scripted")
    parser.add_argument(
        "--turn-every",
        type=float,
        default=10.0,
        help="one utterance per this many seconds (0: none)",
    )
    parser.add_argument("--refine", type=int, default=2, help="bisection steps past the ramp")
    parser.add_argument("--retries", type=int, default=2, help="re-runs of a suspect run")
    parser.add_argument("--core", type=int, help="CPU to pin to (default: the last one allowed)")
    parser.add_argument("--only", choices=FRAMEWORKS, help="run one framework")
    parser.add_argument(
        "--vad-costs", action="store_true", help="print the Silero window costs and stop"
    )
    parser.add_argument(
        "--gather-ms",
        type=float,
        help="how long a Silero batch may wait for more calls' windows once 32 calls are "
        "open (default: the library's, 4 ms; 0: one loop turn only)",
    )
    parser.add_argument(
        "--all-counts",
        action="store_true",
        help="run every listed count even past the first that falls behind: on a loaded shared "
        "machine lateness says little, and the CPU fit (projected per core) needs the points",
    )
    parser.add_argument(
        "--unbatched", action="store_true", help="voxline runs Silero inline per call (before)"
    )
    parser.add_argument("--max-batch", type=int, help="windows per Silero inference (cap)")
    parser.add_argument(
        "--worker-from", type=int, help="Silero batches this big run on the worker thread"
    )
    parser.add_argument("--pipecat-sessions", help="Pipecat's own ramp (default: --sessions)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    quiet_logs()
    core = args.core if args.core is not None else quietest_core()
    os.sched_setaffinity(0, {core})  # inherited by every run
    caller_script(args.turn_every)  # reject a bad --turn-every before minutes of runs
    frameworks = [args.only] if args.only else list(FRAMEWORKS)
    if importlib.util.find_spec("pipecat") is None:
        print("pipecat-ai is not installed: measuring voxline only (pip install pipecat-ai)")
        frameworks = [f for f in frameworks if f != "pipecat"]
    counts = sorted(int(c) for c in args.sessions.split(","))
    speech = f"one utterance per {args.turn_every:g} s" if args.turn_every else "no speech"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"pinned to CPU {core} of {os.cpu_count()}; load average before: {load}\n"
        f"{args.vad} VAD, {speech}, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s measured per run\n"
    )
    if args.vad_costs or (args.vad == "silero" and "pipecat" in frameworks):
        print_vad_costs()
        if args.vad_costs:
            return
    runs: dict[str, list[RunResult]] = {}
    capacity: dict[str, int] = {}
    for framework in frameworks:
        print(f"{framework}:")
        listed = counts
        if framework == "pipecat" and args.pipecat_sessions:
            listed = sorted(int(c) for c in args.pipecat_sessions.split(","))
        runs[framework], capacity[framework] = ramp(framework, listed, args)
    print("harness:")
    top = max(capacity.get("voxline", 0), counts[1] if len(counts) > 1 else 2 * counts[0])
    harness = Fit.of([run("harness", count, args) for count in (counts[0], top)])
    table(runs)
    summary(runs, capacity, harness)


if __name__ == "__main__":
    main()
