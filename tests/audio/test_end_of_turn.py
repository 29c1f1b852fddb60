from __future__ import annotations

import pytest

from voxline.audio.end_of_turn import EndOfTurnStrategy, SilenceEndOfTurn, TranscriptEndOfTurn


def test_silence_strategy_ends_at_its_threshold_and_ignores_words() -> None:
    strategy = SilenceEndOfTurn(0.6)
    assert isinstance(strategy, EndOfTurnStrategy)
    strategy.update_transcript("and then I")
    assert not strategy.is_complete(0.59)
    assert strategy.is_complete(0.6)
    with pytest.raises(ValueError):
        SilenceEndOfTurn(0)


def test_transcript_strategy_slides_the_wait_with_the_predicted_completion() -> None:
    seen: list[str] = []

    def predict(text: str) -> float:
        seen.append(text)
        return {"I want to": 0.0, "I want to fly.": 1.0}.get(text, 0.5)

    strategy = TranscriptEndOfTurn(predict, silence=0.6, min_silence=0.2, max_silence=2.2)
    assert isinstance(strategy, EndOfTurnStrategy)
    assert strategy.needed == 0.6  # no words yet
    strategy.update_transcript("I want to")
    assert strategy.needed == pytest.approx(2.2)
    assert not strategy.is_complete(2.0)
    strategy.update_transcript("I want to fly.")
    assert strategy.needed == pytest.approx(0.2) and strategy.is_complete(0.2)
    strategy.update_transcript("maybe")
    assert strategy.needed == pytest.approx(1.2)
    strategy.update_transcript("   ")  # nothing to judge: the previous verdict stands
    assert seen == ["I want to", "I want to fly.", "maybe"]
    strategy.reset()
    assert strategy.needed == 0.6


def test_transcript_strategy_clamps_predictions_and_checks_its_bounds() -> None:
    strategy = TranscriptEndOfTurn(lambda text: 7.0, min_silence=0.3)
    strategy.update_transcript("done")
    assert strategy.needed == pytest.approx(0.3)
    with pytest.raises(ValueError):
        TranscriptEndOfTurn(lambda text: 0.5, silence=3.0, max_silence=2.0)


def test_an_agent_names_smart_turn_and_its_silence_sets_the_fallback_rule() -> None:
    from voxline.agents.spec import TurnSettings
    from voxline.audio.end_of_turn import strategy_named
    from voxline.audio.smart_turn import SmartTurnEndOfTurn

    turn = TurnSettings(end_of_turn="smart-turn", end_of_turn_silence=0.8)
    strategy = strategy_named(turn.end_of_turn, turn)
    assert isinstance(strategy, SmartTurnEndOfTurn)
    assert (strategy.ask_after, strategy.silence, strategy.max_silence) == (0.2, 0.8, 2.0)
    assert strategy.transcribe_every  # the listener gives it words while the caller talks
    assert strategy_named("silence", TurnSettings()) is None  # the pipeline's own default
