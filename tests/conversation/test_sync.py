"""`TurnSync` on a real SQLite store: coalescing, races with in-flight writes, restarts, retries.

The stores below are `SqlStore` subclasses that count, pause or fail around the real writes, so
every assertion about the final state is checked against what SQLite actually holds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from voxline.conversation.sync import TurnSync
from voxline.conversation.turns import Turn, TurnStore, turn_from_record
from voxline.events import EventBus
from voxline.store.base import ConversationRecord
from voxline.store.sql import SqlStore


class CountingStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.write_calls = 0

    async def write_turns(self, records: list[dict[str, Any]]) -> None:
        self.write_calls += 1
        await super().write_turns(records)


class GatedStore(CountingStore):
    """Holds each write or delete at the gate until the test opens it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def _held(self) -> None:
        self.entered.set()
        await self.gate.wait()

    async def write_turns(self, records: list[dict[str, Any]]) -> None:
        await self._held()
        await super().write_turns(records)

    async def delete_turns(self, conversation_id: str, turn_ids: list[str]) -> None:
        await self._held()
        await super().delete_turns(conversation_id, turn_ids)


class FlakyStore(SqlStore):
    """Fails its first `failures` turn writes, as a database restarting under the agent would."""

    def __init__(self, url: str, failures: int) -> None:
        super().__init__(url)
        self.failures_left = failures

    async def write_turns(self, records: list[dict[str, Any]]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise OSError("database is restarting")
        await super().write_turns(records)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'voxline.db'}"


@pytest.fixture
async def store(url: str) -> AsyncIterator[CountingStore]:
    opened = CountingStore(url)
    await opened.open()
    yield opened
    await opened.close()


async def _assert_store_matches(store: SqlStore, turns: TurnStore, sync: TurnSync) -> None:
    assert await store.load_turns(turns.conversation_id) == [t.to_record() for t in turns]
    for turn in turns:
        assert sync.last_written(turn.id) == turn.version
    assert sync.pending == 0


async def test_a_thousand_appends_end_as_one_write_of_the_final_version(
    store: CountingStore,
) -> None:
    turns = TurnStore("conv-1")
    seen_versions: list[int] = []
    turns.bus.on("turn_updated", lambda turn: seen_versions.append(turn.version))
    sync = TurnSync(store, turns.bus)
    sync.start()

    bot = turns.add_bot_text()
    for i in range(1000):
        bot.content += f"-{i}"
    assert sync.pending == 1
    await sync.flush()

    stored = await store.load_turns("conv-1")
    assert stored == [bot.to_record()]
    assert stored[0]["version"] == 1000
    assert stored[0]["data"]["content"] == "".join(f"-{i}" for i in range(1000))
    # The loop never yields, so the writer wakes once and sees only the final version.
    assert store.write_calls == 1
    assert seen_versions == list(range(1, 1001))
    await _assert_store_matches(store, turns, sync)
    await sync.close()


async def test_changes_made_while_a_write_is_in_flight_are_written_after_it(url: str) -> None:
    store = GatedStore(url)
    await store.open()
    turns = TurnStore("conv-1")
    sync = TurnSync(store, turns.bus, coalesce=0)
    sync.start()

    bot = turns.add_bot_text("Hello")
    await store.entered.wait()  # the first write holds version 0 and is stuck at the gate
    for word in [" there", ",", " how", " can", " I", " help?"]:
        bot.content += word
    bot.complete = True
    store.gate.set()
    await sync.flush()

    await _assert_store_matches(store, turns, sync)
    assert bot.version == 7
    assert store.write_calls == 2
    await sync.close()
    await store.close()


async def test_random_interleaving_of_mutations_and_awaits_ends_equal(
    store: CountingStore,
) -> None:
    rng = random.Random(20240611)
    turns = TurnStore("conv-1")
    sync = TurnSync(store, turns.bus, coalesce=0)
    sync.start()

    bots = [turns.add_bot_text() for _ in range(3)]
    for step in range(300):
        rng.choice(bots).content += f"{step} "
        if rng.random() < 0.3:
            turns.add_user_text(f"interjection {step}")
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)

    await sync.flush()
    await _assert_store_matches(store, turns, sync)
    await sync.close()


async def test_deletes_reach_the_store(store: CountingStore) -> None:
    turns = TurnStore("conv-1")
    sync = TurnSync(store, turns.bus)
    sync.start()
    kept = turns.add_user_text("keep me")
    doomed = turns.add_bot_text("forget me")
    await sync.flush()

    never_written = turns.add_bot_text("gone before the writer woke")
    turns.delete(never_written.id)
    turns.delete(doomed.id)
    await sync.flush()

    assert await store.load_turns("conv-1") == [kept.to_record()]
    assert sync.last_written(doomed.id) is None
    assert sync.pending == 0
    await sync.close()


async def test_a_turn_restored_while_its_delete_is_in_flight_is_written_back(url: str) -> None:
    store = GatedStore(url)
    await store.open()
    turns = TurnStore("conv-1")
    sync = TurnSync(store, turns.bus, coalesce=0)
    sync.start()
    bot = turns.add_bot_text("second thoughts")
    store.gate.set()
    await sync.flush()

    store.gate.clear()
    store.entered.clear()
    turns.delete(bot.id)
    await store.entered.wait()  # the delete is at the gate
    turns.add(bot, seq=bot.seq)
    store.gate.set()
    await sync.flush()

    await _assert_store_matches(store, turns, sync)
    await sync.close()
    await store.close()


async def test_the_conversation_record_is_upserted_before_the_turns(
    store: CountingStore,
) -> None:
    record = ConversationRecord(id="conv-1", agent="concierge", subject="phone:+1", channel="sms")
    turns = TurnStore("conv-1")
    sync = TurnSync(store, turns.bus, conversation=record)
    assert sync.pending == 1
    turns.add_user_text("hi")
    sync.start()
    await sync.flush()

    stored = await store.get_conversation("conv-1")
    assert stored is not None
    assert (stored.agent, stored.subject, stored.channel) == ("concierge", "phone:+1", "sms")
    await _assert_store_matches(store, turns, sync)
    await sync.close()


async def test_a_conversation_survives_a_restart(url: str) -> None:
    record = ConversationRecord(id="conv-1", agent="concierge", subject="phone:+14155550100")
    turns = TurnStore("conv-1")
    first = SqlStore(url)
    await first.open()
    sync = TurnSync(first, turns.bus, conversation=record)
    sync.start()
    turns.add_system("You are terse.")
    turns.add_user_text("table for two at eight", channel="voice")
    call = turns.add_tool_call("call-1", "book", '{"people": 2}', approval_id="appr-1")
    turns.add_tool_result(call.call_id, "book", "booked")
    bot = turns.add_bot_text()
    for word in ["Booked", " for", " two", " at", " eight."]:
        bot.content += word
        await asyncio.sleep(0)
    bot.metadata["latency_ms"] = 380.5
    bot.touch()
    bot.complete = True
    turns.add_dtmf("1")
    turns.add_handoff("human", "wants a person", {"queue": "front-desk"})
    turns.delete(call.id)
    await sync.close()
    await first.close()

    second = SqlStore(url)
    await second.open()
    try:
        rebuilt = [turn_from_record(r) for r in await second.load_turns("conv-1")]
        stored_record = await second.get_conversation("conv-1")
    finally:
        await second.close()

    originals: list[Turn] = turns.all()
    assert [type(t) for t in rebuilt] == [type(t) for t in originals]
    assert [t.to_record() for t in rebuilt] == [t.to_record() for t in originals]
    assert stored_record is not None
    assert stored_record.subject == "phone:+14155550100"

    resumed = TurnStore("conv-1")
    resumed.restore(rebuilt)
    assert resumed.add_user_text("one more thing").seq == originals[-1].seq + 1


async def test_failed_writes_are_retried_and_never_reach_the_conversation(url: str) -> None:
    store = FlakyStore(url, failures=3)
    await store.open()
    turns = TurnStore("conv-1")
    sync = TurnSync(store, turns.bus, coalesce=0, retry_initial=0.001, retry_max=0.004)
    sync.start()

    with capture_logs() as logs:
        bot = turns.add_bot_text()
        for step in range(50):
            bot.content += f"{step},"  # raising here would be the conversation breaking
            if step % 10 == 0:
                turns.add_user_text(f"meanwhile {step}")
            await asyncio.sleep(0.0005)
        await sync.flush()

    await _assert_store_matches(store, turns, sync)
    assert store.failures_left == 0
    retries = [entry for entry in logs if entry["event"] == "turn sync write failed; retrying"]
    assert [entry["attempt"] for entry in retries] == [1, 2, 3]
    assert [entry["log_level"] for entry in retries] == ["warning"] * 3
    assert any(entry["event"] == "turn sync recovered" for entry in logs)
    await sync.close()
    await store.close()


async def test_close_flushes_then_stops_listening(store: CountingStore) -> None:
    turns = TurnStore("conv-1")
    sync = TurnSync(store, turns.bus)
    bot = turns.add_bot_text("last words")  # never started: close() must still write it

    await sync.close()
    assert await store.load_turns("conv-1") == [bot.to_record()]

    bot.content = "after close"
    assert sync.pending == 0
    assert [r["data"]["content"] for r in await store.load_turns("conv-1")] == ["last words"]
    await sync.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        sync.start()


async def test_flush_before_start_is_a_usage_error(store: CountingStore) -> None:
    sync = TurnSync(store, EventBus())

    with pytest.raises(RuntimeError, match="start"):
        await sync.flush()
    await sync.close()


class RecordingStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list[list[dict[str, Any]]] = []

    async def write_turns(self, records: list[dict[str, Any]]) -> None:
        self.batches.append(records)
        await super().write_turns(records)


async def test_records_handed_to_the_store_are_detached_from_live_turns(url: str) -> None:
    store = RecordingStore(url)
    await store.open()
    turns = TurnStore("conv-1")
    sync = TurnSync(store, turns.bus)
    sync.start()
    bot = turns.add_bot_text("hi")
    bot.metadata = {"marks": [1]}
    await sync.flush()

    bot.metadata["marks"].append(2)  # in place, as a playback tracker would
    bot.touch()

    assert store.batches[0][0]["data"]["metadata"] == {"marks": [1]}
    await sync.close()
    await store.close()
