"""The `PlatformStore` contract (agents, listeners, API keys) on every backend in conftest."""

from __future__ import annotations

import pytest

from voxline.store.base import (
    AgentRecord,
    ApiKeyRecord,
    ListenerKind,
    ListenerRecord,
    PlatformStore,
)
from voxline.store.errors import ConflictError, NotFoundError


def _agent(agent_id: str, name: str, **changes: object) -> AgentRecord:
    record = AgentRecord(
        id=agent_id,
        name=name,
        spec={"instructions": "Be brief.", "llm": "fake", "tools": [{"name": "book"}]},
        created_at=100.5,
        updated_at=100.5,
    )
    return record.model_copy(update=changes)


def _listener(
    listener_id: str, agent_id: str, address: str, created_at: float = 10.0
) -> ListenerRecord:
    kind = ListenerKind.WEBSOCKET if address.startswith("/") else ListenerKind.PHONE
    return ListenerRecord(
        id=listener_id,
        agent_id=agent_id,
        kind=kind,
        address=address,
        idle_timeout=42.5,
        created_at=created_at,
        last_seen_at=created_at,
    )


def _key(key_id: str, key_hash: str, created_at: float) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key_id,
        name=f"key {key_id}",
        key_hash=key_hash,
        prefix="vx_" + key_id,
        created_at=created_at,
    )


def test_backend_satisfies_the_platform_protocol(store: PlatformStore) -> None:
    assert isinstance(store, PlatformStore)


# -- agents ----------------------------------------------------------------------------------
async def test_agent_round_trip_by_id_and_by_name(store: PlatformStore) -> None:
    agent = _agent("ag-1", "support")
    await store.save_agent(agent)

    assert await store.get_agent("ag-1") == agent
    assert await store.get_agent_by_name("support") == agent
    assert await store.get_agent("missing") is None
    assert await store.get_agent_by_name("missing") is None


async def test_saving_an_agent_again_replaces_it_but_keeps_created_at(
    store: PlatformStore,
) -> None:
    await store.save_agent(_agent("ag-1", "support"))
    updated = _agent(
        "ag-1",
        "helpdesk",
        spec={"instructions": "Be kind."},
        version=2,
        created_at=999.0,
        updated_at=200.25,
    )
    await store.save_agent(updated)

    assert await store.get_agent("ag-1") == updated.model_copy(update={"created_at": 100.5})
    assert await store.get_agent_by_name("support") is None
    assert [agent.id for agent in await store.list_agents()] == ["ag-1"]


async def test_list_agents_orders_by_name(store: PlatformStore) -> None:
    for agent_id, name in [("1", "sales"), ("2", "billing"), ("3", "support")]:
        await store.save_agent(_agent(agent_id, name))

    assert [agent.name for agent in await store.list_agents()] == ["billing", "sales", "support"]


async def test_a_taken_agent_name_conflicts_and_changes_nothing(store: PlatformStore) -> None:
    first = _agent("ag-1", "support")
    second = _agent("ag-2", "sales")
    await store.save_agent(first)
    await store.save_agent(second)

    with pytest.raises(ConflictError) as caught:
        await store.save_agent(_agent("ag-3", "support"))
    with pytest.raises(ConflictError):
        await store.save_agent(second.model_copy(update={"name": "support", "version": 2}))

    assert (caught.value.entity, caught.value.field, caught.value.value) == (
        "agent",
        "name",
        "support",
    )
    assert await store.list_agents() == [second, first]


async def test_deleting_an_agent_deletes_its_listeners_only(store: PlatformStore) -> None:
    await store.save_agent(_agent("ag-1", "support"))
    await store.save_agent(_agent("ag-2", "sales"))
    await store.save_listener(_listener("l-1", "ag-1", "+14155550100"))
    await store.save_listener(_listener("l-2", "ag-1", "/ws/support"))
    kept = _listener("l-3", "ag-2", "/ws/sales")
    await store.save_listener(kept)

    assert await store.delete_agent("ag-1") is True
    assert await store.delete_agent("ag-1") is False

    assert await store.get_agent("ag-1") is None
    assert await store.list_listeners() == [kept]
    assert await store.get_listener("l-1") is None


# -- listeners -------------------------------------------------------------------------------
async def test_listener_round_trip_and_list_by_agent_oldest_first(store: PlatformStore) -> None:
    await store.save_agent(_agent("ag-1", "support"))
    await store.save_agent(_agent("ag-2", "sales"))
    late = _listener("l-1", "ag-1", "+1415*", created_at=30.0)
    early = _listener("l-2", "ag-1", "/ws/support", created_at=20.0)
    other = _listener("l-3", "ag-2", "*", created_at=25.0)
    for listener in (late, early, other):
        await store.save_listener(listener)

    assert await store.get_listener("l-1") == late
    assert await store.get_listener("missing") is None
    assert await store.list_listeners(agent_id="ag-1") == [early, late]
    assert await store.list_listeners() == [early, other, late]
    assert await store.list_listeners(agent_id="nobody") == []


async def test_saving_a_listener_again_updates_last_seen(store: PlatformStore) -> None:
    await store.save_agent(_agent("ag-1", "support"))
    listener = _listener("l-1", "ag-1", "/ws/support")
    await store.save_listener(listener)

    seen = listener.model_copy(update={"last_seen_at": 77.75})
    await store.save_listener(seen)

    assert await store.get_listener("l-1") == seen


async def test_an_address_taken_by_a_listener_of_the_same_kind_conflicts(
    store: PlatformStore,
) -> None:
    await store.save_agent(_agent("ag-1", "support"))
    await store.save_agent(_agent("ag-2", "sales"))
    taken = _listener("l-1", "ag-1", "+14155550100")
    await store.save_listener(taken)

    with pytest.raises(ConflictError) as caught:
        await store.save_listener(_listener("l-2", "ag-2", "+14155550100"))

    assert (caught.value.entity, caught.value.field) == ("listener", "address")
    assert await store.list_listeners() == [taken]
    socket = ListenerRecord(
        id="l-3", agent_id="ag-2", kind=ListenerKind.WEBSOCKET, address="+14155550100"
    )
    await store.save_listener(socket)  # the same text under another kind is another address
    assert await store.get_listener("l-3") == socket


async def test_moving_a_listener_to_a_taken_address_conflicts(store: PlatformStore) -> None:
    await store.save_agent(_agent("ag-1", "support"))
    first = _listener("l-1", "ag-1", "/ws/a")
    second = _listener("l-2", "ag-1", "/ws/b")
    await store.save_listener(first)
    await store.save_listener(second)

    with pytest.raises(ConflictError):
        await store.save_listener(second.model_copy(update={"address": "/ws/a"}))

    assert await store.list_listeners() == [first, second]


async def test_a_listener_for_an_unknown_agent_is_refused_and_not_kept(
    store: PlatformStore,
) -> None:
    with pytest.raises(NotFoundError) as caught:
        await store.save_listener(_listener("l-1", "ghost", "/ws/ghost"))

    assert (caught.value.entity, caught.value.record_id) == ("agent", "ghost")
    assert await store.list_listeners() == []
    assert await store.get_listener("l-1") is None


async def test_delete_listener(store: PlatformStore) -> None:
    await store.save_agent(_agent("ag-1", "support"))
    await store.save_listener(_listener("l-1", "ag-1", "/ws/support"))

    assert await store.delete_listener("l-1") is True
    assert await store.delete_listener("l-1") is False
    assert await store.list_listeners() == []
    assert await store.get_agent("ag-1") is not None


# -- API keys --------------------------------------------------------------------------------
async def test_api_keys_are_found_by_hash_and_listed_oldest_first(store: PlatformStore) -> None:
    newer = _key("k-2", "hash-2", 200.0)
    older = _key("k-1", "hash-1", 100.0)
    await store.save_api_key(newer)
    await store.save_api_key(older)

    assert await store.find_api_key("hash-1") == older
    assert await store.find_api_key("hash-2") == newer
    assert await store.find_api_key("hash-unknown") is None
    assert await store.list_api_keys() == [older, newer]


async def test_a_revoked_key_is_still_found_and_says_so(store: PlatformStore) -> None:
    key = _key("k-1", "hash-1", 100.0)
    await store.save_api_key(key)

    await store.save_api_key(key.model_copy(update={"revoked": True}))

    found = await store.find_api_key("hash-1")
    assert found is not None
    assert found.revoked is True
    assert [k.revoked for k in await store.list_api_keys()] == [True]


async def test_a_duplicate_key_hash_conflicts_and_changes_nothing(store: PlatformStore) -> None:
    key = _key("k-1", "hash-1", 100.0)
    await store.save_api_key(key)

    with pytest.raises(ConflictError) as caught:
        await store.save_api_key(_key("k-2", "hash-1", 200.0))

    assert (caught.value.entity, caught.value.field) == ("API key", "key_hash")
    assert await store.list_api_keys() == [key]


async def test_a_key_is_used_once_until_it_expires(store: PlatformStore) -> None:
    import asyncio

    wins = await asyncio.gather(*(store.use_once("CA-once", 0.3) for _ in range(8)))
    assert sorted(wins) == [False] * 7 + [True]
    assert await store.use_once("CA-other", 0.3)
    await asyncio.sleep(0.5)
    assert await store.use_once("CA-once", 0.3)  # expired: usable again
