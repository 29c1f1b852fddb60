"""Session behaviour end to end with the scripted FakeLLM and a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from voxline import Agent, LLMConfig, RunContext, Session, SessionState, tool
from voxline.conversation.turns import BotTurn, ToolCallTurn, ToolResultTurn, UserTurn
from voxline.providers.llm.base import LLMError, LLMRequest
from voxline.providers.llm.fake import FakeLLM, FakeReply, FakeToolCall
from voxline.settings import Settings
from voxline.store.base import Store
from voxline.store.sql import SqlStore
from voxline.tools.base import Tool


def make_session(
    llm: FakeLLM, store: Store, settings: Settings, *, tools: Sequence[object] = (), **spec: object
) -> Session:
    spec.setdefault("name", "tester")
    agent = Agent(tools=list(tools), **spec)  # type: ignore[arg-type]
    return Session(agent, llm=llm, store=store, settings=settings)


def kinds(session: Session) -> list[str]:
    return [t.kind.value for t in session.turns]


async def test_greets_then_streams_a_reply(store: Store, settings: Settings) -> None:
    llm = FakeLLM([FakeReply(text="Paris is the capital.")])
    session = make_session(llm, store, settings, greeting="Hello there!")
    deltas: list[str] = []
    states: list[str] = []
    session.on("bot_text_delta", lambda turn, delta: deltas.append(delta))
    session.on("state_changed", lambda old, new, duration: states.append(new.value))
    await session.start()
    reply = await session.send_text("What is the capital of France?")
    await session.close()

    assert reply == "Paris is the capital."
    assert deltas[0] == "Hello there!"
    assert "".join(deltas[1:]) == "Paris is the capital."
    assert len(deltas) > 2  # streamed, not one blob
    assert kinds(session) == ["bot_text", "user_text", "bot_text"]
    assert states[:4] == ["listening", "thinking", "speaking", "listening"]
    messages = llm.requests[0].messages
    assert messages[0].role == "system"
    assert [m.role for m in messages[1:]] == ["assistant", "user"]


async def test_parallel_tool_calls_run_concurrently_and_feed_back(
    store: Store, settings: Settings
) -> None:
    both_started = asyncio.Event()
    started: set[str] = set()

    @tool
    async def lookup(key: str) -> str:
        """Look a key up.

        Args:
            key: What to look up.
        """
        started.add(key)
        if len(started) == 2:
            both_started.set()
        # Each call waits until the other has started: this only finishes when they overlap.
        await asyncio.wait_for(both_started.wait(), timeout=5)
        return f"value of {key}"

    llm = FakeLLM(
        [
            FakeReply(
                tool_calls=[
                    FakeToolCall("lookup", {"key": "a"}),
                    FakeToolCall("lookup", {"key": "b"}),
                ]
            ),
            FakeReply(text="a and b are known."),
        ]
    )
    session = make_session(llm, store, settings, tools=[lookup])
    await session.start()
    reply = await session.send_text("look up a and b")
    await session.close()

    assert reply == "a and b are known."
    assert kinds(session) == [
        "user_text",
        "tool_call",
        "tool_call",
        "tool_result",
        "tool_result",
        "bot_text",
    ]
    second = llm.requests[1].messages
    assistant = next(m for m in second if m.role == "assistant")
    assert [c.name for c in assistant.tool_calls] == ["lookup", "lookup"]
    tool_msgs = [m for m in second if m.role == "tool"]
    assert sorted(m.content or "" for m in tool_msgs) == ["value of a", "value of b"]
    assert {m.tool_call_id for m in tool_msgs} == {c.id for c in assistant.tool_calls}


async def test_failing_tool_becomes_a_result_and_the_call_goes_on(
    store: Store, settings: Settings
) -> None:
    @tool
    def explode(reason: str) -> str:
        """Always fails.

        Args:
            reason: Why.
        """
        raise RuntimeError(f"boom: {reason}")

    llm = FakeLLM(
        [FakeReply(tool_calls=[FakeToolCall("explode", {"reason": "x"})]), "Sorry, that failed."]
    )
    session = make_session(llm, store, settings, tools=[explode])
    await session.start()
    assert await session.send_text("do it") == "Sorry, that failed."
    result = next(t for t in session.turns if isinstance(t, ToolResultTurn))
    assert result.is_error and "the tool failed" in result.content
    tool_msg = next(m for m in llm.requests[1].messages if m.role == "tool")
    assert "the tool failed" in (tool_msg.content or "")
    await session.close()


async def _until(predicate: Callable[[], bool]) -> None:
    """Yield to the loop until `predicate` holds (bounded, so a bug fails instead of hanging)."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - polling state the session exposes
            await asyncio.sleep(0.001)


async def test_interrupt_truncates_to_delivered_text(store: Store, settings: Settings) -> None:
    words = [f"word{i} " for i in range(200)]
    llm = FakeLLM([FakeReply(text=words, token_delay=0.005), "Okay, stopping."])
    session = make_session(llm, store, settings)
    seen: list[str] = []
    session.on("bot_text_delta", lambda turn, delta: seen.append(delta))
    await session.start()
    reply = asyncio.create_task(session.send_text("tell me a long story"))
    await _until(lambda: len(seen) >= 5)
    cut = session.interrupt()
    assert await reply == ""
    assert cut is not None and cut.interrupted
    bot = next(t for t in session.turns if isinstance(t, BotTurn))
    delivered = "".join(seen)
    assert bot.content == delivered  # exactly what was delivered, nothing after
    assert 5 <= len(seen) < 200
    assert session.state == SessionState.LISTENING
    assert await session.send_text("stop") == "Okay, stopping."
    sent = [m.content for m in llm.requests[1].messages if m.role == "assistant"]
    assert sent == [delivered]
    await session.close()


async def test_voice_interrupt_keeps_only_heard_words(store: Store, settings: Settings) -> None:
    llm = FakeLLM([FakeReply(text="One two three four five six.", token_delay=0.001)])
    agent = Agent(name="voice")
    session = Session(agent, llm=llm, store=store, settings=settings, auto_deliver=False)
    await session.start()
    await session.send_text("count")
    bot = next(t for t in session.turns if isinstance(t, BotTurn))
    session.delivery.mark(bot.id, len("One two three"))  # the player got this far
    cut = session.interrupt()
    assert cut is bot and bot.content == "One two three" and bot.interrupted

    # A channel that knows exactly what was heard (ConversationRelay) overrides the estimate.
    llm2 = FakeLLM([FakeReply(text="Alpha beta gamma delta.")])
    session2 = Session(agent, llm=llm2, store=store, settings=settings, auto_deliver=False)
    await session2.start()
    await session2.send_text("greek")
    session2.interrupt(heard_text="Alpha beta")
    bot2 = next(t for t in session2.turns if isinstance(t, BotTurn))
    assert bot2.content == "Alpha beta" and bot2.interrupted
    await session.close()
    await session2.close()


async def test_interrupt_keeps_tool_results_that_ran(store: Store, settings: Settings) -> None:
    calls: list[str] = []
    release = asyncio.Event()

    @tool
    async def book(slot: str) -> str:
        """Book a slot.

        Args:
            slot: The slot.
        """
        calls.append(slot)
        return f"booked {slot}"

    @tool
    async def slow_check(item: str) -> str:
        """A check that takes forever.

        Args:
            item: The item.
        """
        await release.wait()
        return "never"

    llm = FakeLLM(
        [
            FakeReply(tool_calls=[FakeToolCall("book", {"slot": "9am"})]),
            FakeReply(text=[f"w{i} " for i in range(100)], token_delay=0.005),
            FakeReply(tool_calls=[FakeToolCall("slow_check", {"item": "x"})]),
            "Fine.",
        ]
    )
    session = make_session(llm, store, settings, tools=[book, slow_check])
    seen: list[str] = []
    session.on("bot_text_delta", lambda turn, delta: seen.append(delta))
    await session.start()
    task = asyncio.create_task(session.send_text("book 9am"))
    await _until(lambda: len(seen) >= 3)
    session.interrupt()
    await task
    assert calls == ["9am"]
    result = next(t for t in session.turns if isinstance(t, ToolResultTurn))
    assert result.content == "booked 9am" and not result.is_error

    # Interrupting while a tool runs lets it finish: its real result is recorded, not a guess.
    task = asyncio.create_task(session.send_text("check x"))
    await _until(lambda: session.state == SessionState.CALLING_TOOLS)
    session.interrupt()
    await task
    assert len([t for t in session.turns if isinstance(t, ToolResultTurn)]) == 1
    release.set()
    assert await session.send_text("ok?") == "Fine."
    call_ids = [t.call_id for t in session.turns if isinstance(t, ToolCallTurn)]
    results = {t.call_id: t.content for t in session.turns if isinstance(t, ToolResultTurn)}
    assert sorted(call_ids) == sorted(results)
    assert results[call_ids[-1]] == "never"
    await session.close()


async def test_provider_outage_apologises_and_the_session_survives(
    store: Store, settings: Settings
) -> None:
    llm = FakeLLM([FakeReply(fail_before=LLMError("upstream down")), "Back again."])
    session = make_session(llm, store, settings)
    errors: list[BaseException] = []
    session.on("error", lambda error, where: errors.append(error))
    await session.start()
    reply = await session.send_text("hello?")
    assert "something went wrong" in reply
    assert len(errors) == 1
    assert await session.send_text("hello again") == "Back again."
    assert [t.content for t in session.turns if isinstance(t, UserTurn)] == [
        "hello?",
        "hello again",
    ]
    await session.close()


class PlainAgent:
    """No base class: only the three methods of the runtime protocol."""

    def instructions(self) -> str:
        return "You are plain."

    def llm_config(self) -> LLMConfig:
        return LLMConfig(temperature=0.3)

    def tools(self) -> Sequence[Tool]:
        @tool(name="plain_echo")
        def echo(text: str) -> str:
            """Echo text back.

            Args:
                text: The text.
            """
            return text

        return [echo]


async def test_a_plain_object_drives_a_session(store: Store, settings: Settings) -> None:
    llm = FakeLLM(
        [FakeReply(tool_calls=[FakeToolCall("plain_echo", {"text": "hi"})]), "You said hi."]
    )
    session = Session(PlainAgent(), llm=llm, store=store, settings=settings)
    await session.start()
    assert await session.send_text("echo hi") == "You said hi."
    request: LLMRequest = llm.requests[0]
    assert request.messages[0].content == "You are plain."
    assert request.temperature == 0.3
    assert [t.name for t in request.tools] == ["plain_echo"]
    await session.close()


async def test_history_survives_a_restart(tmp_path: Path, settings: Settings) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'restart.db'}"
    first = SqlStore(url)
    await first.open()
    llm = FakeLLM(["Nice to meet you, Ada."])
    session = make_session(llm, first, settings, greeting="Hi!")
    await session.start()
    await session.send_text("My name is Ada.")
    conversation = session.id
    await session.close()
    await first.close()

    second = SqlStore(url)
    await second.open()
    llm2 = FakeLLM(["Your name is Ada."])
    agent = Agent(name="tester", greeting="Hi!")
    resumed = Session(
        agent, llm=llm2, store=second, settings=settings, conversation_id=conversation
    )
    await resumed.start()
    assert [t.kind.value for t in resumed.turns] == ["bot_text", "user_text", "bot_text"]
    assert await resumed.send_text("What is my name?") == "Your name is Ada."
    contents = [m.content for m in llm2.requests[0].messages]
    assert "My name is Ada." in contents and "Nice to meet you, Ada." in contents
    assert contents.count("Hi!") == 1  # no second greeting on resume
    await resumed.close()
    await second.close()


async def test_tools_get_a_run_context_the_model_never_sees(
    store: Store, settings: Settings
) -> None:
    seen: list[RunContext] = []

    @tool
    async def whoami(ctx: RunContext, loud: bool = False) -> str:
        """Say who is calling.

        Args:
            loud: Shout it.
        """
        seen.append(ctx)
        await ctx.say("One moment...") if ctx.say else None
        return str(ctx.subject)

    llm = FakeLLM([FakeReply(tool_calls=[FakeToolCall("whoami", {})]), "Done."])
    agent = Agent(name="ctx", tools=[whoami])
    session = Session(agent, llm=llm, store=store, settings=settings, subject="phone:+14155550100")
    await session.start()
    await session.send_text("who am I")
    assert "ctx" not in str(llm.requests[0].tools[0].parameters)
    assert seen[0].subject == "phone:+14155550100" and seen[0].conversation_id == session.id
    assert any(isinstance(t, BotTurn) and t.content == "One moment..." for t in session.turns)
    await session.close()


async def test_max_reply_chars_cuts_a_runaway_reply(store: Store, settings: Settings) -> None:
    llm = FakeLLM([FakeReply(text=[f"blah{i} " for i in range(100)])])
    session = make_session(llm, store, settings, guardrails={"max_reply_chars": 40})
    await session.start()
    reply = await session.send_text("talk")
    assert len(reply) == 40 and reply.startswith("blah0 blah1")
    await session.close()


async def test_long_conversation_is_summarized_in_the_background(
    store: Store, settings: Settings
) -> None:
    def responder(request: LLMRequest) -> FakeReply:
        if any("<transcript>" in (m.content or "") for m in request.messages):
            return FakeReply(text="The caller is Ada. Facts: name Ada; order A17.")
        return FakeReply(text="Noted.")

    llm = FakeLLM(responder)
    session = make_session(
        llm, store, settings, summarization={"max_turns": 8, "keep_last": 4, "max_tokens": None}
    )
    summaries: list[object] = []
    session.on("summary_created", lambda turn, replaced: summaries.append(turn))
    await session.start()
    for i in range(6):
        await session.send_text(f"Message {i}: I am Ada, order A17.")
    await session.wait_idle()
    assert len(summaries) == 1
    first = session.turns.all()[0]
    assert first.kind.value == "system" and "order A17" in first.to_record()["data"]["content"]
    assert len(session.turns) < 12
    await session.send_text("What is my order?")
    system = [m.content or "" for m in llm.requests[-1].messages if m.role == "system"]
    assert any("Facts: name Ada" in s for s in system)
    await session.close()


async def test_an_interrupted_greeting_keeps_only_what_was_heard(
    store: Store, settings: Settings
) -> None:
    agent = Agent(name="voice", greeting="Welcome to the shop, how can I help you today?")
    session = Session(agent, llm=FakeLLM([]), store=store, settings=settings, auto_deliver=False)
    await session.start()
    [greeting] = session.turns.all()
    session.delivery.mark(greeting.id, len("Welcome to the shop"))
    cut = session.interrupt()
    assert cut is greeting
    assert greeting.to_record()["data"]["content"] == "Welcome to the shop"
    await session.close()
