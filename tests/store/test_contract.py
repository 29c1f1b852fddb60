"""The `Store` contract: every backend in `conftest.STORE_FACTORIES` must pass all of it."""

from __future__ import annotations

import asyncio
import time

from voxline.conversation.turns import TurnStore, turn_from_record
from voxline.store.base import ApprovalRecord, ApprovalStatus, ConversationRecord, Store


def _conversation_with_every_kind(conversation_id: str = "conv-1") -> TurnStore:
    turns = TurnStore(conversation_id)
    turns.add_system("You are terse.", summary=False)
    turns.add_user_text("book me a table", channel="voice", final=True)
    bot = turns.add_bot_text("Sure")
    bot.content += ", for how many?"
    bot.metadata = {"latency_ms": 412.5, "marks": [1, 2]}
    turns.add_tool_call("call-1", "book", '{"people": 2}', approval_id="appr-1")
    turns.add_tool_result("call-1", "book", "booked", is_error=False)
    turns.add_dtmf("42#")
    turns.add_handoff("human", "asked for a person", {"queue": "sales", "priority": 2})
    return turns


async def _wait_past(moment: float) -> None:
    """Let the clock move past `moment`, so the next write is strictly later."""
    while time.time() <= moment:  # noqa: ASYNC110 - polling the wall clock; no event to await
        await asyncio.sleep(0.005)


def test_backend_satisfies_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


# -- conversations ---------------------------------------------------------------------------
async def test_conversation_round_trip(store: Store) -> None:
    record = ConversationRecord(
        id="conv-1",
        agent="concierge",
        subject="phone:+14155550100",
        channel="voice",
        created_at=1000.25,
        updated_at=1000.5,
        metadata={"campaign": "spring", "tags": ["vip"]},
    )
    await store.upsert_conversation(record)

    assert await store.get_conversation("conv-1") == record
    assert await store.get_conversation("missing") is None


async def test_conversation_upsert_updates_fields_but_keeps_created_and_latest_updated(
    store: Store,
) -> None:
    await store.upsert_conversation(
        ConversationRecord(id="c", agent="a", created_at=10.0, updated_at=50.0)
    )
    await store.upsert_conversation(
        ConversationRecord(
            id="c", agent="b", subject="s", created_at=99.0, updated_at=20.0, metadata={"k": 1}
        )
    )

    stored = await store.get_conversation("c")
    assert stored is not None
    assert (stored.agent, stored.subject, stored.metadata) == ("b", "s", {"k": 1})
    assert stored.created_at == 10.0
    assert stored.updated_at == 50.0


async def test_list_conversations_filters_by_subject_newest_first_with_limit(
    store: Store,
) -> None:
    for index, subject in enumerate(["alice", "bob", "alice", "alice"]):
        await store.upsert_conversation(
            ConversationRecord(id=f"c{index}", subject=subject, updated_at=100.0 + index)
        )

    alice = await store.list_conversations(subject="alice")
    assert [c.id for c in await store.list_conversations(subject="alice", limit=1)] == ["c3"]
    assert [c.id for c in alice] == ["c3", "c2", "c0"]
    assert [c.id for c in await store.list_conversations(limit=2)] == ["c3", "c2"]
    assert await store.list_conversations(limit=0) == []
    assert await store.list_conversations(subject="nobody") == []


# -- turns -----------------------------------------------------------------------------------
async def test_turns_round_trip_in_the_exact_record_shape(store: Store) -> None:
    turns = _conversation_with_every_kind()
    records = [turn.to_record() for turn in turns]

    await store.write_turns(records)
    loaded = await store.load_turns("conv-1")

    assert loaded == records
    assert [list(record) for record in loaded] == [list(record) for record in records]
    rebuilt = [turn_from_record(record) for record in loaded]
    assert [type(turn) for turn in rebuilt] == [type(turn) for turn in turns]
    assert [turn.to_record() for turn in rebuilt] == records


async def test_load_turns_orders_by_seq_whatever_the_write_order(store: Store) -> None:
    turns = _conversation_with_every_kind()
    records = [turn.to_record() for turn in turns]

    for record in reversed(records):
        await store.write_turns([record])

    assert [record["seq"] for record in await store.load_turns("conv-1")] == list(
        range(len(records))
    )


async def test_an_older_or_equal_version_never_overwrites_a_newer_one(store: Store) -> None:
    turns = TurnStore("conv-1")
    bot = turns.add_bot_text("one")
    stale = bot.to_record()
    bot.content = "two"
    newer = bot.to_record()
    same_version_other_content = {**newer, "data": {**newer["data"], "content": "imposter"}}

    await store.write_turns([newer])
    await store.write_turns([stale])
    await store.write_turns([same_version_other_content])

    assert await store.load_turns("conv-1") == [newer]

    bot.content = "three"
    await store.write_turns([bot.to_record()])
    assert await store.load_turns("conv-1") == [bot.to_record()]


async def test_a_batch_repeating_a_turn_keeps_its_highest_version(store: Store) -> None:
    turns = TurnStore("conv-1")
    bot = turns.add_bot_text()
    versions = []
    for word in ["a", "b", "c"]:
        bot.content += word
        versions.append(bot.to_record())

    await store.write_turns([versions[1], versions[2], versions[0]])

    assert await store.load_turns("conv-1") == [versions[2]]


async def test_turns_are_scoped_to_their_conversation(store: Store) -> None:
    first = TurnStore("conv-a").add_user_text("hello")
    twin = TurnStore("conv-b").add_user_text("other")
    object.__setattr__(twin, "id", first.id)  # the same turn id in another conversation

    await store.write_turns([first.to_record(), twin.to_record()])

    assert await store.load_turns("conv-a") == [first.to_record()]
    assert await store.load_turns("conv-b") == [twin.to_record()]
    assert await store.load_turns("conv-none") == []


async def test_write_turns_creates_a_missing_conversation_and_bumps_updated_at(
    store: Store,
) -> None:
    turns = TurnStore("conv-1")
    bot = turns.add_bot_text("hi")
    await store.write_turns([bot.to_record()])

    created = await store.get_conversation("conv-1")
    assert created is not None
    assert created.id == "conv-1"

    await _wait_past(created.updated_at)
    bot.content = "hi there"
    await store.write_turns([bot.to_record()])

    bumped = await store.get_conversation("conv-1")
    assert bumped is not None
    assert bumped.updated_at > created.updated_at
    assert bumped.created_at == created.created_at


async def test_write_turns_keeps_an_existing_conversation_record(store: Store) -> None:
    record = ConversationRecord(id="conv-1", agent="concierge", subject="phone:+1", channel="sms")
    await store.upsert_conversation(record)

    await store.write_turns([TurnStore("conv-1").add_user_text("hi").to_record()])

    stored = await store.get_conversation("conv-1")
    assert stored is not None
    assert (stored.agent, stored.subject, stored.channel) == ("concierge", "phone:+1", "sms")


async def test_empty_writes_and_deletes_are_no_ops(store: Store) -> None:
    await store.write_turns([])
    await store.delete_turns("conv-1", [])

    assert await store.load_turns("conv-1") == []
    assert await store.get_conversation("conv-1") is None


async def test_delete_turns_removes_only_the_named_turns(store: Store) -> None:
    turns = _conversation_with_every_kind()
    other = TurnStore("conv-2").add_user_text("untouched")
    await store.write_turns([turn.to_record() for turn in turns] + [other.to_record()])
    doomed = [turn.id for turn in turns.all()[1:3]]

    await store.delete_turns("conv-1", doomed)
    await store.delete_turns("conv-2", doomed)

    remaining = [turn.to_record() for turn in turns if turn.id not in doomed]
    assert await store.load_turns("conv-1") == remaining
    assert await store.load_turns("conv-2") == [other.to_record()]


async def test_large_batches_write_and_delete_in_one_call(store: Store) -> None:
    turns = TurnStore("conv-big")
    for index in range(2500):
        turns.add_user_text(f"line {index}")
    records = [turn.to_record() for turn in turns]

    await store.write_turns(records)
    assert await store.load_turns("conv-big") == records

    await store.delete_turns("conv-big", [record["id"] for record in records[:1500]])
    assert await store.load_turns("conv-big") == records[1500:]


# -- approvals -------------------------------------------------------------------------------
def _approval(approval_id: str, conversation_id: str, created_at: float) -> ApprovalRecord:
    return ApprovalRecord(
        id=approval_id,
        conversation_id=conversation_id,
        call_id=f"call-{approval_id}",
        tool="refund",
        arguments={"amount": 12.5, "currency": "EUR"},
        subject="phone:+14155550100",
        created_at=created_at,
    )


async def test_approval_round_trip_and_decision(store: Store) -> None:
    pending = _approval("a1", "conv-1", 100.0)
    await store.save_approval(pending)
    assert await store.get_approval("a1") == pending
    assert await store.get_approval("missing") is None

    decided = pending.model_copy(
        update={
            "status": ApprovalStatus.APPROVED,
            "reason": "ok by Sam",
            "result": "refunded",
            "applied": True,
            "decided_at": 160.75,
        }
    )
    await store.save_approval(decided)

    assert await store.get_approval("a1") == decided


async def test_list_approvals_by_status_and_conversation_oldest_first(store: Store) -> None:
    approvals = [
        _approval("a3", "conv-1", 300.0),
        _approval("a1", "conv-1", 100.0),
        _approval("a2", "conv-2", 200.0),
        _approval("a4", "conv-2", 400.0).model_copy(update={"status": ApprovalStatus.REJECTED}),
    ]
    for approval in approvals:
        await store.save_approval(approval)

    async def ids(
        status: ApprovalStatus | None = None, conversation_id: str | None = None
    ) -> list[str]:
        found = await store.list_approvals(status=status, conversation_id=conversation_id)
        return [approval.id for approval in found]

    assert await ids() == ["a1", "a2", "a3", "a4"]
    assert await ids(status=ApprovalStatus.PENDING) == ["a1", "a2", "a3"]
    assert await ids(status=ApprovalStatus.REJECTED) == ["a4"]
    assert await ids(conversation_id="conv-2") == ["a2", "a4"]
    assert await ids(status=ApprovalStatus.PENDING, conversation_id="conv-2") == ["a2"]
    assert await ids(status=ApprovalStatus.APPROVED) == []


# -- retention -------------------------------------------------------------------------------
async def test_delete_conversations_before_takes_turns_and_approvals_along(store: Store) -> None:
    await store.upsert_conversation(ConversationRecord(id="ancient", updated_at=5.0))
    await store.save_approval(_approval("a-ancient", "ancient", 1.0))

    stale = _conversation_with_every_kind("stale")
    await store.write_turns([turn.to_record() for turn in stale])
    await store.save_approval(_approval("a-stale", "stale", 2.0))
    stale_record = await store.get_conversation("stale")
    assert stale_record is not None

    await _wait_past(stale_record.updated_at)
    fresh = _conversation_with_every_kind("fresh")
    await store.write_turns([turn.to_record() for turn in fresh])
    await store.save_approval(_approval("a-fresh", "fresh", 3.0))
    fresh_record = await store.get_conversation("fresh")
    assert fresh_record is not None

    deleted = await store.delete_conversations_before(fresh_record.updated_at)

    assert deleted == 2
    assert [c.id for c in await store.list_conversations()] == ["fresh"]
    assert await store.load_turns("stale") == []
    assert await store.load_turns("fresh") == [turn.to_record() for turn in fresh]
    assert [a.id for a in await store.list_approvals()] == ["a-fresh"]
    assert await store.delete_conversations_before(fresh_record.updated_at) == 0


async def test_a_position_is_held_by_one_turn_whoever_writes(store: Store) -> None:
    """Two writers (two workers with a call each) never store two turns at one seq."""
    import pytest

    from voxline.store.errors import SeqConflictError

    mine, theirs = TurnStore("conv-seq"), TurnStore("conv-seq")
    first = mine.add_user_text("mine")
    await store.write_turns([first.to_record()])
    rival = theirs.add_user_text("theirs")  # also seq 0
    with pytest.raises(SeqConflictError):
        await store.write_turns([rival.to_record(), theirs.add_bot_text("x").to_record()])
    stored = await store.load_turns("conv-seq")
    assert [(r["seq"], r["id"]) for r in stored] == [(0, first.id)]  # nothing of the batch kept

    # An update of a turn at its own position is no conflict, and a freed position is free.
    first.content = "mine, edited"
    await store.write_turns([first.to_record()])
    await store.delete_turns("conv-seq", [first.id])
    await store.write_turns([rival.to_record()])
    assert [r["id"] for r in await store.load_turns("conv-seq")] == [rival.id]


async def test_rebase_adopts_the_other_writers_turns_and_moves_ours_after(store: Store) -> None:
    mine, theirs = TurnStore("conv-rebase"), TurnStore("conv-rebase")
    theirs.add_user_text("a")
    theirs.add_bot_text("b")
    await store.write_turns([t.to_record() for t in theirs])
    own = mine.add_user_text("c")
    moved = mine.rebase([turn_from_record(r) for r in await store.load_turns("conv-rebase")])
    assert moved == 1 and own.seq == 2
    await store.write_turns([own.to_record()])
    seqs = [r["seq"] for r in await store.load_turns("conv-rebase")]
    assert seqs == [0, 1, 2]


async def test_approval_transitions_are_compare_and_set(store: Store) -> None:
    record = ApprovalRecord(id="apr-cas", conversation_id="c", call_id="k", tool="t")
    await store.save_approval(record)
    approved = record.model_copy(update={"status": ApprovalStatus.APPROVED})
    rejected = record.model_copy(update={"status": ApprovalStatus.REJECTED})
    results = await asyncio.gather(
        store.replace_approval(approved, expected=record),
        store.replace_approval(rejected, expected=record),
    )
    assert sorted(results) == [False, True]
    stored = await store.get_approval("apr-cas")
    assert stored is not None and stored.status in {"approved", "rejected"}
    claimed = stored.model_copy(update={"claimed_by": "me"})
    assert await store.replace_approval(claimed, expected=stored)
    assert not await store.replace_approval(
        stored.model_copy(update={"claimed_by": "you"}), expected=stored
    )
    assert (await store.get_approval("apr-cas")).claimed_by == "me"  # type: ignore[union-attr]
