"""A reply never outlives whoever awaits it, and a closed session starts nothing."""

from __future__ import annotations

import asyncio

import pytest

from voxline import Agent, RunContext, Session, tool
from voxline.conversation.memory import ConversationMemory
from voxline.conversation.session import SessionClosedError
from voxline.conversation.turns import BotTurn, UserTurn
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.settings import Settings
from voxline.store.base import ConversationRecord, Store

SLOW = FakeReply(text="one two three four five six seven eight nine ten", token_delay=0.05)


async def test_cancelling_the_caller_of_send_text_cancels_the_reply(
    store: Store, settings: Settings
) -> None:
    llm = FakeLLM([SLOW])
    session = Session(Agent(name="t"), llm=llm, store=store, settings=settings)
    await session.start()
    deltas: list[str] = []
    three = asyncio.Event()

    def on_delta(turn: BotTurn, delta: str) -> None:
        deltas.append(delta)
        if len(deltas) == 3:
            three.set()

    session.on("bot_text_delta", on_delta)
    caller = asyncio.create_task(session.send_text("count for me"))
    await three.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    heard = len(deltas)
    await asyncio.sleep(0.3)
    assert len(deltas) == heard  # nothing streams after the caller is gone
    [bot] = [t for t in session.turns if isinstance(t, BotTurn)]
    assert bot.interrupted and bot.content == "".join(deltas)  # what was sent is what is kept
    await session.close()
    stored = [r for r in await store.load_turns(session.id) if r["kind"] == "bot_text"]
    assert stored[0]["data"]["content"] == "".join(deltas)  # and it is stored


async def test_a_closed_session_refuses_work_and_left_no_task_running(
    store: Store, settings: Settings
) -> None:
    ran: list[str] = []

    @tool
    async def slow_booking(ctx: RunContext) -> str:
        """Book it."""
        await asyncio.sleep(0.3)
        ran.append("booked")
        return "booked"

    llm = FakeLLM([FakeReply(tool_calls=[FakeToolCall("slow_booking")]), "Done."])
    agent = Agent(name="t", tools=[slow_booking])
    session = Session(agent, llm=llm, store=store, settings=settings)
    await session.start()
    reply = asyncio.create_task(session.send_text("book"))
    await asyncio.sleep(0.1)  # the tool is running
    await session.close()
    assert ran == ["booked"]  # a tool that started finished (under its own timeout)
    assert len(session.tasks) == 0
    assert await reply == ""  # the reply was stopped by the close
    with pytest.raises(SessionClosedError):
        await session.send_text("again")
    with pytest.raises(SessionClosedError):
        await session.respond()
    results = [r for r in await store.load_turns(session.id) if r["kind"] == "tool_result"]
    assert [r["data"]["content"] for r in results] == ["booked"]  # its real result is kept


async def test_sessions_on_one_memory_answer_only_their_own_connection(
    store: Store, settings: Settings
) -> None:
    memory = ConversationMemory("conv-shared")
    await memory.open(store, ConversationRecord(id="conv-shared", agent="t"))

    def answer(request):  # type: ignore[no-untyped-def]
        question = next(m.content for m in reversed(request.messages) if m.role == "user")
        return FakeReply(text=f"answer to {question}", token_delay=0.01)

    llm = FakeLLM(answer)
    sessions = [
        Session(Agent(name="t"), memory=memory, llm=llm, store=store, settings=settings)
        for _ in range(2)
    ]
    seen: list[list[str]] = [[], []]
    for index, session in enumerate(sessions):
        session.on("bot_text_delta", lambda turn, delta, i=index: seen[i].append(delta))
        await session.start(greet=False)
    replies = await asyncio.gather(sessions[0].send_text("a?"), sessions[1].send_text("b?"))
    assert replies == ["answer to a?", "answer to b?"]
    assert "".join(seen[0]) == "answer to a?" and "".join(seen[1]) == "answer to b?"
    # Each one's turns carry its connection; positions are unique across both.
    users = [t for t in memory.turns if isinstance(t, UserTurn)]
    assert {u.connection for u in users} == {s.connection_id for s in sessions}
    assert sorted(t.seq for t in memory.turns) == list(range(len(memory.turns)))
    for session in sessions:
        await session.close()
    await memory.close()
    assert len(await store.load_turns("conv-shared")) == 4


class FlakyStore:
    """A real store whose turn writes fail while `down` (a database outage mid-call)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = False
        self.refused = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def write_turns(self, records: list[dict[str, object]]) -> None:
        if self.down:
            self.refused += 1
            raise OSError("connection refused")
        await self._store.write_turns(records)


async def test_a_call_keeps_talking_through_a_store_outage(
    store: Store, settings: Settings
) -> None:
    """Write-behind: the conversation never waits for storage; the turns catch up after."""
    flaky = FlakyStore(store)
    llm = FakeLLM(["First answer.", "Second answer."])
    session = Session(Agent(name="t"), llm=llm, store=flaky, settings=settings)  # type: ignore[arg-type]
    await session.start()
    flaky.down = True
    assert await session.send_text("one") == "First answer."
    assert await session.send_text("two") == "Second answer."
    await asyncio.sleep(0.3)
    assert flaky.refused > 0 and await store.load_turns(session.id) == []
    flaky.down = False
    await session.close()  # flushes once the store is back
    contents = [r["data"]["content"] for r in await store.load_turns(session.id)]
    assert contents == ["one", "First answer.", "two", "Second answer."]
