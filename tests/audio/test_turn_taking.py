"""The turn-taking state machine, driven by a scripted VAD on 10 ms chunks (exact timings)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from tests.audio.scripted_vad import RATE, ScriptedVAD, marked_audio, script
from voxline.audio.end_of_turn import TranscriptEndOfTurn
from voxline.audio.turn_taking import (
    GateEvent,
    GateState,
    SpeechChunk,
    SpeechEnded,
    SpeechGate,
    SpeechStarted,
    TurnOptions,
)

CHUNK = 160  # 10 ms


def run(
    probabilities: Sequence[float],
    options: TurnOptions | None = None,
    *,
    frame: int = 320,
    chunk: int = CHUNK,
    gate: SpeechGate | None = None,
) -> list[GateEvent]:
    """Feeds audio matching the script in `frame`-sized pieces, as a channel would."""
    gate = gate or SpeechGate(ScriptedVAD(probabilities, chunk), options)
    audio = marked_audio(len(probabilities), chunk)
    events: list[GateEvent] = []
    for start in range(0, len(audio), frame):
        events += gate.push(audio[start : start + frame])
    return events


def kinds(events: Sequence[GateEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


def only(events: Sequence[GateEvent], kind: type[GateEvent]) -> list[GateEvent]:
    return [event for event in events if isinstance(event, kind)]


@pytest.mark.parametrize(
    ("burst", "starts"), [(0.15, False), (0.19, False), (0.2, True), (0.5, True)]
)
def test_a_burst_shorter_than_min_speech_never_starts_a_turn(burst: float, starts: bool) -> None:
    events = run(script((0.0, 1.0), (0.95, burst), (0.0, 1.0)))
    assert kinds(events) == (["SpeechStarted", "SpeechEnded"] if starts else [])


def test_a_pause_shorter_than_the_end_of_turn_silence_keeps_one_turn() -> None:
    events = run(script((0.0, 0.5), (0.9, 1.0), (0.0, 0.3), (0.9, 1.0), (0.0, 1.0)))
    assert kinds(events) == ["SpeechStarted", "SpeechEnded"]
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    assert started.t == pytest.approx(0.5)
    assert started.confirmed_at == pytest.approx(0.7)  # min_speech after the onset
    assert ended.started == pytest.approx(0.5)
    assert ended.speech_end == pytest.approx(2.8)
    assert ended.t == pytest.approx(3.4)  # 0.6 s of silence later
    assert ended.reason == "silence"


@pytest.mark.parametrize("silence", [0.3, 0.6, 1.2])
def test_the_turn_ends_exactly_after_the_configured_silence(silence: float) -> None:
    events = run(
        script((0.0, 0.2), (0.9, 1.0), (0.0, 2.0)), TurnOptions(end_of_turn_silence=silence)
    )
    ended = only(events, SpeechEnded)
    assert len(ended) == 1
    assert isinstance(ended[0], SpeechEnded)
    assert ended[0].t - ended[0].speech_end == pytest.approx(silence)


def test_a_pause_just_short_of_the_silence_does_not_split_but_a_longer_one_does() -> None:
    options = TurnOptions(end_of_turn_silence=0.5)
    kept = run(script((0.9, 0.5), (0.0, 0.49), (0.9, 0.5), (0.0, 1.0)), options)
    split = run(script((0.9, 0.5), (0.0, 0.5), (0.9, 0.5), (0.0, 1.0)), options)
    assert kinds(kept) == ["SpeechStarted", "SpeechEnded"]
    assert kinds(split) == ["SpeechStarted", "SpeechEnded"] * 2


def test_the_utterance_audio_starts_with_the_pre_roll_and_runs_to_the_end() -> None:
    events = run(script((0.0, 1.0), (0.9, 1.0), (0.0, 1.0)), TurnOptions(pre_roll=0.3))
    ended = only(events, SpeechEnded)[0]
    assert isinstance(ended, SpeechEnded)
    pcm = ended.audio.pcm
    # Chunk 70 is 0.3 s before the onset chunk (100); the turn ends at 2.6 s (chunk 259).
    assert pcm[0] == 70 and pcm[-1] == 259
    assert len(pcm) == round((2.6 - 0.7) * RATE)
    assert ended.audio.timestamp == pytest.approx(0.7)
    assert ended.audio.sample_rate == RATE
    assert not pcm.flags.writeable


def test_pre_roll_is_shorter_when_audio_began_just_before_the_onset() -> None:
    ended = only(run(script((0.0, 0.1), (0.9, 0.5), (0.0, 1.0))), SpeechEnded)[0]
    assert isinstance(ended, SpeechEnded)
    assert ended.audio.timestamp == 0.0 and ended.audio.pcm[0] == 0


def test_pre_roll_never_reaches_back_into_the_previous_turn() -> None:
    events = run(script((0.9, 0.5), (0.0, 0.7), (0.9, 0.5), (0.0, 1.0)))
    first, second = only(events, SpeechEnded)
    assert isinstance(first, SpeechEnded) and isinstance(second, SpeechEnded)
    assert first.t == pytest.approx(1.1)
    assert second.audio.timestamp == pytest.approx(first.t)  # 0.1 s of pre-roll, not 0.3 s
    assert second.started == pytest.approx(1.2)


def test_hysteresis_keeps_speech_going_between_the_two_thresholds() -> None:
    probabilities = script((0.0, 0.2), (0.6, 0.05), (0.4, 1.0), (0.3, 1.0))
    with_hysteresis = run(probabilities, TurnOptions(deactivation_threshold=0.35))
    without = run(probabilities, TurnOptions(deactivation_threshold=0.5))
    ended = only(with_hysteresis, SpeechEnded)[0]
    assert isinstance(ended, SpeechEnded)
    assert ended.started == pytest.approx(0.2)
    assert ended.speech_end == pytest.approx(1.25)  # 0.3 counts as silence
    assert ended.t == pytest.approx(1.85)
    assert without == []


def test_probabilities_between_the_thresholds_alone_do_not_start_speech() -> None:
    assert run(script((0.0, 0.2), (0.45, 2.0), (0.0, 1.0))) == []


def test_speech_longer_than_max_utterance_is_cut_into_turns_without_losing_audio() -> None:
    options = TurnOptions(max_utterance=2.0, pre_roll=0.3)
    events = run(script((0.0, 0.5), (0.9, 5.0), (0.0, 1.0)), options)
    ended = [event for event in only(events, SpeechEnded) if isinstance(event, SpeechEnded)]
    assert [event.reason for event in ended] == ["max_length", "max_length", "silence"]
    assert ended[0].t == pytest.approx(2.5)
    assert ended[1].t == pytest.approx(4.5)
    for earlier, later in itertools.pairwise(ended):
        assert later.audio.timestamp == pytest.approx(earlier.audio.end)  # contiguous, no overlap
    audio = np.concatenate([event.audio.pcm for event in ended])
    np.testing.assert_array_equal(audio, marked_audio(610)[20 * CHUNK :])


def test_framing_does_not_change_the_result() -> None:
    probabilities = script(
        (0.0, 0.5), (0.9, 1.0), (0.2, 0.3), (0.8, 0.7), (0.0, 1.0), chunk_samples=512
    )
    audio = marked_audio(len(probabilities), 512)

    def feed(sizes: list[int]) -> list[tuple[str, float, bytes]]:
        gate = SpeechGate(ScriptedVAD(probabilities, 512), TurnOptions(emit_chunks=True))
        events: list[GateEvent] = []
        start = 0
        for size in sizes:
            events += gate.push(audio[start : start + size])
            start += size
        assert start >= len(audio)
        return [summary(event) for event in events]

    rng = np.random.default_rng(7)
    whole = feed([len(audio)])
    assert feed([320] * (len(audio) // 320 + 1)) == whole
    assert feed([int(n) for n in rng.integers(1, 1500, size=len(audio))]) == whole
    assert kinds_of(whole)[0] == "SpeechStarted" and kinds_of(whole)[-1] == "SpeechEnded"


def summary(event: GateEvent) -> tuple[str, float, bytes]:
    if isinstance(event, SpeechStarted):
        return ("started", event.t, b"")
    if isinstance(event, SpeechChunk):
        return ("chunk", event.audio.timestamp, event.audio.pcm.tobytes())
    return ("ended", event.t, event.audio.pcm.tobytes())


def kinds_of(summaries: list[tuple[str, float, bytes]]) -> list[str]:
    return ["Speech" + s[0].capitalize() for s in summaries]


def test_streamed_chunks_add_up_to_the_utterance() -> None:
    events = run(script((0.0, 1.0), (0.9, 1.0), (0.0, 1.0)), TurnOptions(emit_chunks=True))
    assert events[0] == SpeechStarted(1.0, 1.2)
    chunks = [event for event in events if isinstance(event, SpeechChunk)]
    ended = events[-1]
    assert isinstance(ended, SpeechEnded)
    assert chunks[0].audio.timestamp == ended.audio.timestamp == pytest.approx(0.7)
    streamed = np.concatenate([chunk.audio.pcm for chunk in chunks])
    np.testing.assert_array_equal(streamed, ended.audio.pcm)


def test_views_handed_out_survive_the_next_turn() -> None:
    events = run(script((0.0, 0.5), (0.9, 0.5), (0.0, 1.0), (0.9, 0.5), (0.0, 1.0)))
    first, second = only(events, SpeechEnded)
    assert isinstance(first, SpeechEnded) and isinstance(second, SpeechEnded)
    assert first.audio.pcm[0] == 20 and first.audio.pcm[-1] == 159
    assert second.audio.pcm[0] == 170


def test_user_speaking_follows_the_confirmed_turn() -> None:
    gate = SpeechGate(ScriptedVAD(script((0.9, 0.5), (0.0, 1.0))))
    audio = marked_audio(150)
    seen = []
    for start in range(0, len(audio), 320):
        gate.push(audio[start : start + 320])
        seen.append(gate.user_speaking)
    assert seen[:9] == [False] * 9  # min_speech not reached
    assert seen[10] and seen[40]
    assert not seen[-1] and gate.state is GateState.SILENT


def test_flush_ends_a_turn_in_progress_with_the_partial_block() -> None:
    gate = SpeechGate(ScriptedVAD(script((0.0, 0.5), (0.9, 1.0))))
    run(script((0.0, 0.5), (0.9, 1.0)), gate=gate)
    gate.push(np.full(100, 7, dtype=np.int16))  # less than one VAD chunk
    (ended,) = gate.flush()
    assert isinstance(ended, SpeechEnded)
    assert ended.reason == "flush"
    assert ended.t == pytest.approx(1.5 + 100 / RATE)
    assert ended.audio.pcm[-1] == 7 and len(ended.audio.pcm) == 0.3 * RATE + RATE + 100
    assert gate.flush() == ()


def test_flush_drops_unconfirmed_speech() -> None:
    gate = SpeechGate(ScriptedVAD(script((0.0, 0.5), (0.9, 0.1))))
    assert run(script((0.0, 0.5), (0.9, 0.1)), gate=gate) == []
    assert gate.flush() == ()


def test_reset_forgets_the_turn_and_resets_the_vad_stream() -> None:
    vad = ScriptedVAD(script((0.9, 1.0), (0.0, 0.5), (0.9, 0.5), (0.0, 1.0)))
    gate = SpeechGate(vad)
    audio = marked_audio(300)
    assert kinds(gate.push(audio[:16000])) == ["SpeechStarted"]
    gate.reset()
    assert not gate.user_speaking and vad.streams[0].resets == 1
    events = gate.push(audio[16000:])
    ended = only(events, SpeechEnded)
    assert len(ended) == 1
    assert isinstance(ended[0], SpeechEnded)
    assert ended[0].started == pytest.approx(1.5)
    assert ended[0].audio.timestamp == pytest.approx(1.2)  # pre-roll from after the reset
    assert gate.time == pytest.approx(3.0)


def test_a_transcript_aware_strategy_waits_longer_for_an_unfinished_sentence() -> None:
    probabilities = script((0.0, 0.2), (0.9, 1.0), (0.0, 1.0), (0.9, 0.5), (0.0, 3.0))
    audio = marked_audio(len(probabilities))

    def turns(completion: float) -> list[GateEvent]:
        strategy = TranscriptEndOfTurn(lambda text: completion, max_silence=1.5)
        gate = SpeechGate(ScriptedVAD(probabilities), end_of_turn=strategy)
        events: list[GateEvent] = []
        for start in range(0, len(audio), 320):
            new = gate.push(audio[start : start + 320])
            if any(isinstance(event, SpeechStarted) for event in new):
                gate.end_of_turn.update_transcript("I'd like to book")
            events += new
        return events

    unfinished = only(turns(0.0), SpeechEnded)
    assert len(unfinished) == 1  # a 1 s pause did not end the turn
    assert isinstance(unfinished[0], SpeechEnded)
    assert unfinished[0].t - unfinished[0].speech_end == pytest.approx(1.5)
    finished = only(turns(1.0), SpeechEnded)
    assert len(finished) == 2  # the 1 s pause now ends the first turn
    for ended in finished:
        assert isinstance(ended, SpeechEnded)
        assert ended.t - ended.speech_end == pytest.approx(0.25)


def test_works_with_silero_sized_chunks() -> None:
    events = run(
        script((0.0, 1.0), (0.9, 1.0), (0.0, 0.3), (0.9, 1.0), (0.0, 1.0), chunk_samples=512),
        chunk=512,
    )
    assert kinds(events) == ["SpeechStarted", "SpeechEnded"]


@pytest.mark.parametrize(
    "bad",
    [
        {"activation_threshold": 0.3, "deactivation_threshold": 0.5},
        {"min_speech": 5.0, "max_utterance": 4.0},
        {"end_of_turn_silence": 0},
        {"activation_threshold": 1.5},
        {"unknown": 1},
    ],
)
def test_inconsistent_options_are_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        TurnOptions(**bad)
