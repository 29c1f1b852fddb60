"""Batched VAD across calls: the scheduler's rules, and the real Silero model batched.

The scheduler is checked with a recording `infer` (its rules are about when and what it runs);
the model is the real Silero v6, its batched answers compared with one-window-at-a-time runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.audio.test_silero_gate import RATE, room_noise, speak
from voxline.audio.turn_taking import GateEvent, SpeechEnded, SpeechGate, SpeechStarted
from voxline.providers.vad.batch import BatchScheduler, LoopSchedulers
from voxline.providers.vad.silero import CHUNK_SAMPLES, SileroVAD

TOLERANCE = 1e-5


# -- the scheduler, with a recording model ----------------------------------------------------


class Member:
    def __init__(self, name: str) -> None:
        self.name = name
        self.windows: list[int] = []
        self.answers: list[int] = []

    @property
    def queued(self) -> int:
        return len(self.windows)


class RecordedBatch:
    """Takes each member's oldest window when built; answers it with itself when finished."""

    def __init__(self, members: list[Member]) -> None:
        self.members = members
        self.taken = [member.windows.pop(0) for member in members]

    def compute(self) -> None:
        return None

    def finish(self) -> None:
        for member, window in zip(self.members, self.taken, strict=True):
            member.answers.append(window)


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, members: list[Member]) -> RecordedBatch:
        self.batches.append([member.name for member in members])
        return RecordedBatch(members)


async def test_every_window_of_a_loop_turn_goes_into_one_inference() -> None:
    model = Recorder()
    scheduler: BatchScheduler[Member] = BatchScheduler(model, loop=asyncio.get_running_loop())
    members = [Member(name) for name in "abc"]
    for member in members:
        member.windows.append(1)
        scheduler.ready(member)
    assert model.batches == []  # nothing runs before the loop turns
    await asyncio.sleep(0)
    assert model.batches == [["a", "b", "c"]]
    assert scheduler.stats.inferences == 1 and scheduler.stats.mean_batch == 3


async def test_a_lone_window_is_answered_in_the_next_loop_turn() -> None:
    model = Recorder()
    scheduler: BatchScheduler[Member] = BatchScheduler(model, loop=asyncio.get_running_loop())
    member = Member("a")
    member.windows.append(7)
    scheduler.ready(member)
    await asyncio.sleep(0)
    assert member.answers == [7]
    assert scheduler.waiting == 0


async def test_a_stream_with_several_windows_takes_one_per_inference_in_order() -> None:
    model = Recorder()
    scheduler: BatchScheduler[Member] = BatchScheduler(model, loop=asyncio.get_running_loop())
    many, one = Member("many"), Member("one")
    many.windows += [1, 2, 3]
    one.windows.append(9)
    scheduler.ready(many)
    scheduler.ready(one)
    await asyncio.sleep(0)
    assert model.batches == [["many", "one"]]
    for _ in range(2):  # the rest one loop turn each: other calls' frames get in between
        await asyncio.sleep(0)
    assert model.batches == [["many", "one"], ["many"], ["many"]]
    assert many.answers == [1, 2, 3] and one.answers == [9]


async def test_with_many_streams_open_a_batch_gathers_windows_of_later_loop_turns() -> None:
    model = Recorder()
    loop = asyncio.get_running_loop()
    scheduler: BatchScheduler[Member] = BatchScheduler(model, loop=loop, gather=0.05, gather_from=3)
    members = [Member(name) for name in "abc"]
    for member in members:
        scheduler.attach(member)
    for member in members:  # one call per loop turn, as spread-out sockets deliver them
        member.windows.append(1)
        scheduler.ready(member)
        await asyncio.sleep(0)
    assert model.batches == []
    await asyncio.sleep(0.1)
    assert model.batches == [["a", "b", "c"]]


async def test_with_few_streams_open_there_is_no_gathering() -> None:
    model = Recorder()
    loop = asyncio.get_running_loop()
    scheduler: BatchScheduler[Member] = BatchScheduler(model, loop=loop, gather=10.0, gather_from=3)
    lone = Member("lone")
    scheduler.attach(lone)
    lone.windows.append(1)
    scheduler.ready(lone)
    await asyncio.sleep(0)
    assert model.batches == [["lone"]]


def test_without_an_event_loop_the_window_is_answered_at_once() -> None:
    model = Recorder()
    schedulers: LoopSchedulers[Member] = LoopSchedulers(model)
    member = Member("a")
    member.windows.append(5)
    schedulers.current().ready(member)
    assert member.answers == [5]


def test_batches_are_capped_at_max_batch() -> None:
    model = Recorder()
    scheduler: BatchScheduler[Member] = BatchScheduler(model, max_batch=2)
    members = [Member(name) for name in "abcde"]
    scheduler.loop = asyncio.new_event_loop()  # queued, not run at once: `run` below runs them
    try:
        for member in members:
            member.windows.append(0)
            scheduler.ready(member)
        scheduler.run()
    finally:
        scheduler.loop.close()
    assert model.batches == [["a", "b"], ["c", "d"], ["e"]]
    assert [member.answers for member in members] == [[0]] * 5


# -- the real model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def callers(tmp_path_factory: pytest.TempPathFactory) -> list[npt.NDArray[np.int16]]:
    """Four calls of 3 s: two speak (different lines, different moments), two are noise."""
    folder: Path = tmp_path_factory.mktemp("speech")
    lines = [speak("What's the weather in Paris tomorrow?", folder), speak("Book a table.", folder)]
    calls = []
    for index, (line, lead) in enumerate([(lines[0], 0.3), (lines[1], 1.0)]):
        audio = room_noise(3.0, seed=index)
        audio[round(lead * RATE) : round(lead * RATE) + len(line)] += line[
            : 3 * RATE - round(lead * RATE)
        ]
        calls.append(audio)
    calls += [room_noise(3.0, seed=10), (room_noise(3.0, seed=11) * 20).astype(np.int16)]
    return calls


def windows(audio: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
    return [
        audio[i : i + CHUNK_SAMPLES]
        for i in range(0, len(audio) - CHUNK_SAMPLES + 1, CHUNK_SAMPLES)
    ]


def one_at_a_time(vad: SileroVAD, audio: npt.NDArray[np.int16]) -> list[float]:
    stream = vad.stream()
    return [stream.process(window) for window in windows(audio)]


async def batched(vad: SileroVAD, calls: Sequence[npt.NDArray[np.int16]]) -> list[list[float]]:
    """All calls' windows, one window per call per loop turn, as concurrent calls send them."""
    answers: list[list[float]] = [[] for _ in calls]
    streams = [vad.batched_stream(answer.append) for answer in answers]
    for step in zip(*(windows(audio) for audio in calls), strict=True):
        for stream, window in zip(streams, step, strict=True):
            assert stream is not None
            stream.submit(window)
        await asyncio.sleep(0)
    return answers


async def test_batched_probabilities_equal_one_at_a_time_runs(
    silero: SileroVAD, callers: list[npt.NDArray[np.int16]]
) -> None:
    before = silero.batch_stats().inferences
    got = await batched(silero, callers)
    for audio, answers in zip(callers, got, strict=True):
        alone = one_at_a_time(silero, audio)
        assert len(answers) == len(alone)
        assert np.max(np.abs(np.array(answers) - np.array(alone))) <= TOLERANCE
    assert max(max(answers) for answers in got[:2]) > 0.9  # the speakers were heard
    assert silero.batch_stats().inferences - before == len(got[0])  # one run per turn
    assert silero.batch_stats().largest == len(callers)


async def test_one_calls_speech_does_not_leak_into_anothers_state(
    silero: SileroVAD, callers: list[npt.NDArray[np.int16]]
) -> None:
    quiet = callers[2]
    beside_speech = (await batched(silero, [callers[0], quiet, callers[1]]))[1]
    beside_noise = (await batched(silero, [callers[3], quiet]))[1]
    assert np.max(np.abs(np.array(beside_speech) - np.array(beside_noise))) <= TOLERANCE
    assert max(beside_speech) < 0.5


async def test_a_call_leaving_mid_batch_gets_no_answer_and_the_others_do(
    silero: SileroVAD, callers: list[npt.NDArray[np.int16]]
) -> None:
    answers: dict[str, list[float]] = {"stays": [], "leaves": [], "closer": []}
    stays = silero.batched_stream(answers["stays"].append)
    leaves = silero.batched_stream(answers["leaves"].append)

    def close_the_other(probability: float) -> None:
        answers["closer"].append(probability)
        assert leaves is not None
        leaves.close()

    closer = silero.batched_stream(close_the_other)
    assert stays is not None and leaves is not None and closer is not None
    window = windows(callers[0])[20]
    # `closer` is answered first in the batch and hangs `leaves` up inside its callback
    for stream in (closer, stays, leaves):
        stream.submit(window)
    await asyncio.sleep(0)
    assert len(answers["closer"]) == 1 and len(answers["stays"]) == 1
    assert answers["leaves"] == []
    with pytest.raises(RuntimeError):
        leaves.submit(window)
    # a call that leaves before the turn's run is not part of it at all
    gone = silero.batched_stream(answers["leaves"].append)
    assert gone is not None
    stays.submit(window)
    gone.submit(window)
    gone.close()
    await asyncio.sleep(0)
    assert len(answers["stays"]) == 2 and answers["leaves"] == []


async def test_a_full_queue_is_answered_at_once_and_counted_nothing_dropped(
    silero: SileroVAD, callers: list[npt.NDArray[np.int16]]
) -> None:
    answers: list[float] = []
    stream = silero.batched_stream(answers.append, max_pending=4)
    assert stream is not None
    overflows = silero.batch_stats().overflows
    for window in windows(callers[0])[:10]:  # ten windows in one loop turn: one big frame
        stream.submit(window)
        assert stream.pending <= 4
    assert silero.batch_stats().overflows - overflows == 2  # at the 5th and the 9th window
    assert len(answers) == 8
    for _ in range(2):  # the last two, one loop turn each
        await asyncio.sleep(0)
    assert answers == pytest.approx(one_at_a_time(silero, callers[0])[:10], abs=TOLERANCE)


# -- gates on the batched model --------------------------------------------------------------


def feed_inline(gate: SpeechGate, audio: npt.NDArray[np.int16]) -> list[GateEvent]:
    events: list[GateEvent] = []
    for start in range(0, len(audio), 320):
        events += gate.push(audio[start : start + 320])
    return events


def turns(events: Sequence[GateEvent]) -> list[tuple[str, float]]:
    out = []
    for event in events:
        if isinstance(event, SpeechStarted):
            out.append(("started", event.t))
        elif isinstance(event, SpeechEnded):
            out.append(("ended", event.t))
    return out


async def test_batched_gates_take_the_same_turns_as_inline_ones(
    silero: SileroVAD, callers: list[npt.NDArray[np.int16]]
) -> None:
    calls = [np.concatenate([audio, room_noise(1.0, seed=20)]) for audio in callers]
    expected = [turns(feed_inline(SpeechGate(silero), audio)) for audio in calls]
    got: list[list[GateEvent]] = [[] for _ in calls]
    gates = [SpeechGate(silero, on_events=events.extend) for events in got]
    assert all(gate.batched for gate in gates)
    for start in range(0, len(calls[0]), 320):  # 20 ms frames of every call in each loop turn
        for gate, audio in zip(gates, calls, strict=True):
            assert gate.push(audio[start : start + 320]) == ()
        await asyncio.sleep(0)
        assert all(gate.pending == 0 for gate in gates)  # answered within the turn
    assert [turns(events) for events in got] == expected
    assert expected[0] and expected[1]  # the speakers took a turn


async def test_flush_settles_the_waiting_windows_before_ending_the_turn(
    silero: SileroVAD, callers: list[npt.NDArray[np.int16]]
) -> None:
    later: list[GateEvent] = []
    gate = SpeechGate(silero, on_events=later.extend)
    audio = callers[0][: round(1.0 * RATE)]  # cut off mid-sentence, 31 windows
    gate.push(audio)  # every window waits for the loop turn
    assert gate.pending == len(audio) // CHUNK_SAMPLES
    ended = gate.flush()
    assert gate.pending == 0
    assert [type(event) for event in later][:1] == [SpeechStarted]
    assert [type(event) for event in ended] == [SpeechEnded]
    assert ended[0].reason == "flush"  # type: ignore[union-attr]


async def test_a_closed_gate_hears_nothing_more(
    silero: SileroVAD, callers: list[npt.NDArray[np.int16]]
) -> None:
    heard: list[GateEvent] = []
    closed: list[GateEvent] = []
    open_gate = SpeechGate(silero, on_events=heard.extend)
    gone = SpeechGate(silero, on_events=closed.extend)
    audio = callers[0][: round(1.0 * RATE)]  # speech starts in it; 31 windows wait
    open_gate.push(audio)
    gone.push(audio)
    gone.close()
    for _ in range(len(audio) // CHUNK_SAMPLES):  # one batch per loop turn
        await asyncio.sleep(0)
    assert open_gate.pending == 0
    assert [type(event) for event in heard][:1] == [SpeechStarted]
    assert closed == [] and gone.pending == 0


class SilentSTT:
    label = "silent"
    sample_rate = RATE

    async def transcribe(self, pcm: npt.NDArray[np.int16], *, language: str | None = None) -> Any:
        from voxline.providers.stt.base import Transcript

        return Transcript("", audio_duration=len(pcm) / RATE)


async def test_a_listener_with_on_events_gets_its_turn_a_loop_turn_later(
    silero: SileroVAD, callers: list[npt.NDArray[np.int16]]
) -> None:
    from voxline.audio.turn_taking import TurnOptions
    from voxline.voice.listener import Listener

    later: list[GateEvent] = []
    started_seen: list[float | None] = []

    def on_events(events: Sequence[GateEvent]) -> None:
        later.extend(events)
        if any(isinstance(event, SpeechStarted) for event in events):
            started_seen.append(listener.started)  # the listener absorbed them first

    listener = Listener(
        silero, SilentSTT(), input_rate=RATE, options=TurnOptions(), on_events=on_events
    )
    audio = np.concatenate([callers[0], room_noise(1.0, seed=5)])
    returned: list[GateEvent] = []
    for start in range(0, len(audio), 320):
        returned += listener.push(audio[start : start + 320])
        await asyncio.sleep(0)
    assert returned == []
    assert [name for name, _ in turns(later)] == ["started", "ended"]
    assert started_seen == [turns(later)[0][1]]
    assert listener.started is None and not listener.user_speaking
    listener.close()


class FailsOnce:
    """The real session, except that its first batched run raises."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.failed = False

    def run(self, outputs: Any, feeds: dict[str, Any]) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("inference failed")
        return self.session.run(outputs, feeds)


async def test_a_failed_batch_answers_silence_so_every_window_keeps_its_answer(
    silero: SileroVAD, callers: list[npt.NDArray[np.int16]]
) -> None:
    vad = SileroVAD(FailsOnce(silero._session))
    got: list[list[float]] = [[], []]
    streams = [vad.batched_stream(answers.append) for answers in got]
    for window in windows(callers[0])[:12]:
        for stream in streams:
            assert stream is not None
            stream.submit(window)
        await asyncio.sleep(0)
    assert [len(answers) for answers in got] == [12, 12]
    assert got[0][0] == got[1][0] == 0.0
    assert max(got[0][1:]) > 0.5  # later windows are heard again
