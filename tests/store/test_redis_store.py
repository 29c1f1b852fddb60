"""What `RedisStore` adds beyond the contract: lifecycle errors, key namespacing, tie order."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from tests.store.conftest import REDIS_URL, redis_prefix
from voxline.conversation.turns import TurnStore
from voxline.store.base import ConversationRecord
from voxline.store.redis_store import RedisStore


async def test_using_a_store_before_open_says_how_to_fix_it() -> None:
    store = RedisStore(REDIS_URL)

    with pytest.raises(RuntimeError, match=r"await store\.open\(\)"):
        await store.write_turns([TurnStore("conv-1").add_user_text("hi").to_record()])
    with pytest.raises(RuntimeError, match=r"await store\.open\(\)"):
        await store.get_conversation("conv-1")


async def test_repr_hides_the_url() -> None:
    assert "secret" not in repr(RedisStore("redis://:secret@127.0.0.1:6379/0"))


async def test_every_key_lives_under_the_prefix_and_stores_do_not_see_each_other() -> None:
    async with redis_prefix() as mine, redis_prefix() as theirs:
        store, other = RedisStore(REDIS_URL, prefix=mine), RedisStore(REDIS_URL, prefix=theirs)
        await store.open()
        await other.open()
        raw = Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            await store.upsert_conversation(ConversationRecord(id="c", subject="phone:+1"))
            await store.write_turns([TurnStore("c").add_user_text("hi").to_record()])

            assert await other.get_conversation("c") is None
            assert await other.list_conversations() == []
            keys = [key async for key in raw.scan_iter(match=mine + "*")]
            assert {key.removeprefix(mine).split(":")[0] for key in keys} == {
                "conversation",
                "conversations",
                "subject",
                "turns",
                "turn_versions",
                "turn_seqs",
            }
        finally:
            await raw.aclose()
            await store.close()
            await other.close()


async def test_listing_past_a_tie_at_the_limit_orders_by_id_like_sql() -> None:
    async with redis_prefix() as prefix:
        store = RedisStore(REDIS_URL, prefix=prefix)
        await store.open()
        try:
            for conversation_id in ["d", "b", "a", "c"]:
                await store.upsert_conversation(
                    ConversationRecord(id=conversation_id, updated_at=5.0)
                )
            await store.upsert_conversation(ConversationRecord(id="z", updated_at=9.0))

            listed = await store.list_conversations(limit=3)

            assert [c.id for c in listed] == ["z", "a", "b"]
        finally:
            await store.close()
