"""Two `voxline serve` processes on one PostgreSQL and one Redis, as a fleet: a decision made on
either worker reaches the caller on the other, one pending approval has one winner among many
concurrent deciders and its tool runs once, a worker killed mid-reply loses no turn, and two
connections of one conversation on two workers keep its turn positions unique and gap-free.

The workers are real processes (`tests/api/fleet.py`: what they run, and how they start).

Skipped, saying why, where PostgreSQL (VOXLINE_TEST_POSTGRES_URL) or Redis
(VOXLINE_TEST_REDIS_URL) is not reachable, unless CI is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.api.conftest import KEY, ApiClient
from tests.api.fleet import (
    BOOKED,
    CHECKING,
    DECLINED,
    PLUGIN_ENV,
    ROOT,
    TEST_LIMIT,
    Counter,
    Fleet,
)
from tests.server.twilio_emulator import TOKEN, RelayClient, voice_params
from tests.store.conftest import REDIS_URL, redis_prefix, scratch_postgres_url
from voxline.store.sql import SqlStore, parse_database_url

FILLER = "One moment. "  # the tool filler a phone call hears as the model chooses a tool


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One scratch database, one Redis prefix and two workers for the whole module. The
    database and prefix are made and removed on a loop of their own (tests get fresh loops)."""
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    counter = Counter()
    try:
        database = loop.run_until_complete(stack.enter_async_context(scratch_postgres_url()))
        prefix = loop.run_until_complete(stack.enter_async_context(redis_prefix()))
        logs = tmp_path_factory.mktemp("fleet")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            PLUGIN_ENV: counter.url,
            "VOXLINE_REDIS_URL": REDIS_URL,
            "VOXLINE_REDIS_KEY_PREFIX": prefix,
            "VOXLINE_API_KEY": KEY,
            "VOXLINE_LLM": "fake",
            "VOXLINE_DATA_DIR": str(logs),
            "VOXLINE_LOG_LEVEL": "INFO",  # the tests read what the workers say they did
            "VOXLINE_API_RATE_LIMIT": "10000",
            "TWILIO_AUTH_TOKEN": TOKEN,
        }
        fleet = Fleet(database, env, logs, counter)
        for index in range(2):
            fleet.start(index)
        try:
            yield fleet
        finally:
            fleet.stop()
    finally:
        counter.close()
        loop.run_until_complete(stack.aclose())
        loop.close()


@pytest.fixture
async def workers(fleet: Fleet) -> AsyncIterator[tuple[ApiClient, ApiClient]]:
    await fleet.ready()
    yield fleet.clients()


@pytest.fixture
async def store(fleet: Fleet) -> AsyncIterator[SqlStore]:
    """The workers' database, read from the test (the store is the truth they share)."""
    opened = SqlStore(fleet.database)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


# -- helpers --------------------------------------------------------------------------------


def new_caller() -> str:
    return "+1415555" + str(uuid.uuid4().int % 10_000).zfill(4)


async def new_agent(api: ApiClient) -> dict[str, Any]:
    return await api.create_agent(
        {
            "name": f"fleet-{uuid.uuid4().hex[:8]}",
            "llm": "fleet",
            "instructions": "You book tables.",
            "tools": ["book_table"],
        }
    )


@contextlib.asynccontextmanager
async def phone_call(
    api: ApiClient, agent: dict[str, Any], caller: str
) -> AsyncIterator[RelayClient]:
    """A call from `caller` to a number of the agent's, all on `api`'s worker, the way Twilio
    makes it: the signed voice webhook, then the signed ConversationRelay socket carrying the
    call token the webhook's TwiML handed out (one CallSid per call: tokens are single-use)."""
    number = new_caller().replace("+1415", "+1800")
    await api.listen(agent["id"], number=number)
    call_sid = "CA" + uuid.uuid4().hex
    webhook = await api.twilio.post(
        "/twilio/voice", {**voice_params(caller, number), "CallSid": call_sid}
    )
    assert webhook.status_code == 200, webhook.text
    twiml = ET.fromstring(webhook.text)
    fields: dict[str, Any] = {"callSid": call_sid, "from": caller, "to": number}
    relay = twiml.find("./Connect/ConversationRelay")
    assert relay is not None
    greeting = {p.attrib["name"]: p.attrib["value"] for p in relay.findall("Parameter")}
    async with api.twilio.relay(twiml, **fields) as call:
        if greeting.get("voxlineGreeting") == "contextual":
            await call.reply()  # a returning caller is greeted by the model first
        yield call


async def pending_approval(api: ApiClient, subject: str, key: str = KEY) -> dict[str, Any]:
    async with api.client(key) as client:
        while True:
            listed = await client.get("/approvals")
            assert listed.status_code == 200, listed.text
            approvals: list[dict[str, Any]] = listed.json()["approvals"]
            mine = [a for a in approvals if a["subject"] == subject]
            if mine:
                assert len(mine) == 1, mine
                return mine[0]
            await asyncio.sleep(0.05)


async def decide(api: ApiClient, approval_id: str, decision: str, key: str = KEY) -> httpx.Response:
    async with api.client(key) as client:
        return await client.post(f"/approvals/{approval_id}", json={"decision": decision})


async def quiet(call: RelayClient, seconds: float = 1.0) -> None:
    """Nothing more reaches the caller for `seconds` (an outcome spoken twice would)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            message = await call.ws.recv()
            pytest.fail(f"the caller got more than one outcome: {message!r}")


async def stored_turns(store: SqlStore, conversation_id: str) -> list[dict[str, Any]]:
    return await store.load_turns(conversation_id)


def assert_gap_free(turns: list[dict[str, Any]]) -> None:
    seqs = [turn["seq"] for turn in turns]
    assert seqs == list(range(len(turns))), seqs


async def settled(store: SqlStore, conversation_id: str, done: Any) -> list[dict[str, Any]]:
    """The conversation's stored turns once `done(turns)` holds (writes are behind)."""
    while True:
        turns = await stored_turns(store, conversation_id)
        if done(turns):
            return turns
        await asyncio.sleep(0.05)


async def every_conversation_gap_free(database: str) -> None:
    """Straight from PostgreSQL: in every conversation of the fleet so far, the turn
    positions are 0..n-1, each used once."""
    engine = create_async_engine(parse_database_url(database))
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT conversation_id, count(*), count(DISTINCT seq), min(seq), "
                        "max(seq) FROM turns GROUP BY conversation_id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert rows
    for conversation_id, count, distinct, low, high in rows:
        assert count == distinct == high + 1 and low == 0, (conversation_id, count, low, high)


def contents(turns: list[dict[str, Any]], kind: str) -> list[str]:
    return [str(t["data"].get("content")) for t in turns if t["kind"] == kind]


# -- the tests ------------------------------------------------------------------------------


async def test_an_approval_decided_on_the_other_worker_reaches_the_caller(
    workers: tuple[ApiClient, ApiClient], fleet: Fleet, store: SqlStore
) -> None:
    a, b = workers
    caller = new_caller()
    async with asyncio.timeout(TEST_LIMIT):
        agent = await new_agent(a)
        # a stored key with the approvals scope decides on worker B, not only the bootstrap key
        created = await b.call("POST", "/api/keys", json={"name": "staff", "scopes": ["approvals"]})
        assert created.status_code == 201, created.text
        assert created.json()["scopes"] == ["approvals"]
        staff = created.json()["token"]
        async with phone_call(a, agent, caller) as call:
            await call.prompt("book 4")
            assert await call.reply() == FILLER + CHECKING
            pending = await pending_approval(b, f"phone:{caller}", key=staff)
            assert fleet.counter.runs_for(pending["conversation_id"]) == []

            decided = await decide(b, pending["id"], "approve", key=staff)
            assert decided.status_code == 200, decided.text
            assert decided.json()["status"] == "approved"
            assert await call.reply() == BOOKED  # on worker A, decided on worker B
            await quiet(call)
        [run] = fleet.counter.runs_for(pending["conversation_id"])
        assert run["guests"] == 4

        turns = await settled(
            store, pending["conversation_id"], lambda ts: BOOKED in contents(ts, "bot_text")
        )
        assert contents(turns, "user_text") == ["book 4"]
        assert contents(turns, "bot_text")[-1] == BOOKED
        assert_gap_free(turns)
        await every_conversation_gap_free(fleet.database)


async def test_approvals_scope_is_required_of_stored_keys(
    workers: tuple[ApiClient, ApiClient],
) -> None:
    a, b = workers
    async with asyncio.timeout(TEST_LIMIT):
        plain = await a.call("POST", "/api/keys", json={"name": "robot"})
        assert plain.status_code == 201, plain.text
        assert plain.json()["scopes"] == []
        async with b.client(plain.json()["token"]) as client:
            refused = await client.get("/approvals")
            assert refused.status_code == 403, refused.text
            assert "approvals" in refused.json()["error"]
            assert (await client.get("/api/agents")).status_code == 200  # the API still is his

        scoped = await a.call("POST", "/api/keys", json={"name": "staff", "scopes": ["approvals"]})
        token = scoped.json()["token"]
        async with b.client(token) as client:
            assert (await client.get("/approvals")).status_code == 200
        listed = (await b.call("GET", "/api/keys")).json()["keys"]
        assert {k["name"]: k["scopes"] for k in listed}.items() >= {"robot": []}.items()
        revoked = await a.call("DELETE", f"/api/keys/{scoped.json()['id']}")
        assert revoked.status_code == 204
        async with b.client(token) as client:
            assert (await client.get("/approvals")).status_code == 401

        unknown = await a.call("POST", "/api/keys", json={"name": "x", "scopes": ["root"]})
        assert unknown.status_code == 422, unknown.text


async def test_concurrent_decisions_over_both_workers_have_one_winner(
    workers: tuple[ApiClient, ApiClient], fleet: Fleet, store: SqlStore
) -> None:
    a, b = workers
    caller = new_caller()
    async with asyncio.timeout(TEST_LIMIT):
        agent = await new_agent(b)
        async with phone_call(a, agent, caller) as call:
            # 20 approvals at once, half on each worker
            await call.prompt("book 2")
            assert await call.reply() == FILLER + CHECKING
            pending = await pending_approval(a, f"phone:{caller}")
            conversation_id = pending["conversation_id"]
            answers = await asyncio.gather(
                *(decide((a, b)[i % 2], pending["id"], "approve") for i in range(20))
            )
            codes = sorted(r.status_code for r in answers)
            assert codes == [200] + [409] * 19, [r.text for r in answers]
            assert await call.reply() == BOOKED
            await quiet(call)
            assert [r["guests"] for r in fleet.counter.runs_for(conversation_id)] == [2]

            # approvals and rejections racing, over both workers: still one winner
            await call.prompt("book 3")
            assert await call.reply() == FILLER + CHECKING
            pending = await pending_approval(b, f"phone:{caller}")
            answers = await asyncio.gather(
                *(
                    decide((a, b)[i % 2], pending["id"], ("approve", "reject")[i // 2 % 2])
                    for i in range(20)
                )
            )
            winners = [r for r in answers if r.status_code == 200]
            assert len(winners) == 1, [r.text for r in answers]
            assert all(r.status_code == 409 for r in answers if r not in winners)
            approved = winners[0].json()["status"] == "approved"
            assert await call.reply() == (BOOKED if approved else DECLINED)
            await quiet(call)
            ran = [r["guests"] for r in fleet.counter.runs_for(conversation_id)]
            assert ran == ([2, 3] if approved else [2])

        # two fillers, two "let me check", two outcomes
        turns = await settled(store, conversation_id, lambda ts: len(contents(ts, "bot_text")) == 6)
        assert contents(turns, "user_text") == ["book 2", "book 3"]
        assert_gap_free(turns)
        results = [t for t in turns if t["kind"] == "tool_result"]
        assert len(results) == 4  # two "pending", then one outcome each: nothing applied twice
        await every_conversation_gap_free(fleet.database)


async def test_two_connections_on_two_workers_write_one_conversation(
    workers: tuple[ApiClient, ApiClient], fleet: Fleet, store: SqlStore
) -> None:
    a, b = workers
    caller = new_caller()
    rounds = 6
    async with asyncio.timeout(TEST_LIMIT):
        agent = await new_agent(a)
        opened = await b.call(
            "POST", "/api/sessions", json={"agent_id": agent["id"], "subject": f"phone:{caller}"}
        )
        assert opened.status_code == 201, opened.text
        conversation_id = opened.json()["id"]

        async def on_the_phone(api: ApiClient, name: str) -> None:  # a call on each worker ...
            async with phone_call(api, agent, caller) as call:
                for i in range(rounds):
                    await call.prompt(f"{name} {i}")
                    assert await call.reply() == f"reply to {name} {i} done"

        async def texting(api: ApiClient, name: str) -> None:  # ... while texting each worker
            for i in range(rounds):
                sent = await api.call(
                    "POST",
                    f"/api/sessions/{conversation_id}/messages",
                    json={"text": f"{name} {i}"},
                )
                assert sent.status_code == 200, sent.text
                assert sent.json()["reply"] == f"reply to {name} {i} done"

        await asyncio.gather(
            on_the_phone(a, "call-a"),
            on_the_phone(b, "call-b"),
            texting(a, "text-a"),
            texting(b, "text-b"),
        )
        # each call's memory held positions that the other worker took first: they rebased
        rebased = [
            line
            for line in fleet.said().splitlines()
            if "rebased on another writer" in line and conversation_id in line
        ]
        assert rebased, "no worker met another's turns: the rebase path was not exercised"

        names = ("call-a", "call-b", "text-a", "text-b")
        said = {f"{name} {i}" for name in names for i in range(rounds)}
        expected = {f"reply to {s} done" for s in said}
        turns = await settled(
            store, conversation_id, lambda ts: expected <= set(contents(ts, "bot_text"))
        )
        assert sorted(contents(turns, "user_text")) == sorted(said)
        greeting = "reply to Note:"  # a call from a returning caller begins with a greeting
        answers = [c for c in contents(turns, "bot_text") if not c.startswith(greeting)]
        assert sorted(answers) == sorted(expected)
        assert_gap_free(turns)
        for question in said:  # every reply is stored after its question
            [asked] = [t["seq"] for t in turns if t["data"].get("content") == question]
            [answered] = [
                t["seq"] for t in turns if t["data"].get("content") == f"reply to {question} done"
            ]
            assert asked < answered, (question, asked, answered)
        await every_conversation_gap_free(fleet.database)


async def test_a_worker_killed_mid_reply_loses_no_turn(
    workers: tuple[ApiClient, ApiClient], fleet: Fleet, store: SqlStore
) -> None:
    """Two conversations on worker A when it is SIGKILLed: one mid-reply (words streamed and
    stored), one still waiting for its first word. Both go on on worker B, whose model is
    shown the questions A never finished answering."""
    a, b = workers
    async with asyncio.timeout(TEST_LIMIT):
        agent = await new_agent(a)
        sessions = []
        for _ in range(2):
            opened = await a.call(
                "POST",
                "/api/sessions",
                json={"agent_id": agent["id"], "subject": f"phone:{new_caller()}"},
            )
            assert opened.status_code == 201, opened.text
            sessions.append(f"/api/sessions/{opened.json()['id']}/messages")
            sent = await a.call("POST", sessions[-1], json={"text": "hello"})
            assert sent.json()["reply"] == "reply to hello done"
        streaming, waiting = sessions
        questions = {streaming: "slow story please", waiting: "stall a while"}
        cut = [
            asyncio.create_task(a.call("POST", path, json={"text": text}))
            for path, text in questions.items()
        ]

        def mid_reply(turns: list[dict[str, Any]]) -> bool:
            bots = contents(turns, "bot_text")
            return questions[streaming] in contents(turns, "user_text") and bool(
                bots and bots[-1].startswith("word0 word1")
            )

        def asked(turns: list[dict[str, Any]]) -> bool:
            return questions[waiting] in contents(turns, "user_text")

        # A is mid-reply on one, thinking on the other, and has stored both questions
        await settled(store, conversation_of(streaming), mid_reply)
        await settled(store, conversation_of(waiting), asked)
        fleet.kill(0)
        for task in cut:
            with pytest.raises(httpx.TransportError):
                await task

        for path, question in questions.items():
            after = await b.call("POST", path, json={"text": "recap"})
            assert after.status_code == 200, after.text
            # B's model is shown the question A took before it died, and its own
            assert after.json()["reply"] == f"heard hello | {question} | recap"
            reply = after.json()["reply"]
            turns = await settled(
                store,
                conversation_of(path),
                lambda ts, r=reply: contents(ts, "bot_text")[-1:] == [r],
            )
            assert_gap_free(turns)
            assert contents(turns, "user_text") == ["hello", question, "recap"]
            [asked_a] = [t["seq"] for t in turns if t["data"].get("content") == question]
            [asked_b] = [t["seq"] for t in turns if t["data"].get("content") == "recap"]
            assert asked_a < asked_b < turns[-1]["seq"]
            # A's reply was cut off: stored as far as it got, and marked interrupted
            [cut_off] = [t for t in turns if asked_a < t["seq"] < asked_b]
            assert cut_off["kind"] == "bot_text" and cut_off["data"]["interrupted"]
            if path == streaming:
                assert str(cut_off["data"]["content"]).startswith("word0 word1")
            else:
                assert cut_off["data"]["content"] == ""
        await every_conversation_gap_free(fleet.database)


def conversation_of(messages_path: str) -> str:
    return messages_path.split("/")[3]
