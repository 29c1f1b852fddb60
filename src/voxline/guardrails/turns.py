"""The small pieces the reply engine uses to act on guardrails: which caller turn is new, how a
trip is recorded on a turn and announced, and the tool call that hands a call over.

They are kept out of `conversation/engine.py` so the engine reads as the reply loop it is; none
of them holds state of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from voxline.conversation.turns import Turn, TurnStore, UserTurn, new_id
from voxline.events import EventBus
from voxline.guardrails.checks import Stage, Trip
from voxline.providers.llm.base import ToolCallRequest

HANDOFF_TOOL = "transfer_to_human"  # the channel tool a guardrail handoff runs, where there is one


def annotate(turn: Turn, entry: Mapping[str, Any]) -> None:
    """Add an entry to `turn.metadata["guardrails"]` by assignment, so the turn's version moves
    and the write-behind sync stores it."""
    entries = [*turn.metadata.get("guardrails", []), dict(entry)]
    turn.metadata = {**turn.metadata, "guardrails": entries}


def record_trip(
    bus: EventBus, log: Any, turn: Turn, trip: Trip, stage: Stage, *, late: bool = False
) -> None:
    """Annotate the turn, emit `guardrail_tripped`, log it (check names, never values)."""
    annotate(turn, trip.annotation(stage, late=late))
    bus.emit("guardrail_tripped", turn=turn, trip=trip, stage=stage, late=late)
    log.info(
        "guardrail tripped",
        check=trip.check,
        stage=stage,
        action=trip.action,
        turn_id=turn.id,
        late=late,
    )


def latest_own_turn(turns: TurnStore, connection: str) -> Turn | None:
    """The newest turn this connection wrote."""
    for turn in reversed(turns.all()):
        if turn.connection == connection:
            return turn
    return None


def caller_turn(turns: TurnStore, connection: str) -> UserTurn | None:
    """This connection's newest turn when it is a caller turn: what a reply answers. A reply
    after a tool result, an approval, a system note or a guardrail's own response has no
    caller turn to check."""
    turn = latest_own_turn(turns, connection)
    return turn if isinstance(turn, UserTurn) else None


def handoff_call(trip: Trip) -> ToolCallRequest:
    reason = f"guardrail {trip.check}: {trip.reason}" if trip.reason else f"guardrail {trip.check}"
    return ToolCallRequest(new_id("call"), HANDOFF_TOOL, json.dumps({"reason": reason}))
