"""Guardrails through a plain `Session`, with nothing wired by the test: the session builds its
engine with the agent's guardrails and opens its memory with the agent's record transform."""

from __future__ import annotations

from typing import Any

from voxline.conversation.turns import UserTurn
from voxline.providers.llm.base import LLM
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.providers.llm.registry import register_llm
from voxline.settings import Settings
from voxline.store.base import Store

from .conftest import session_for, spec

CARD = "4111 1111 1111 1111"


def _blocker(argument: str, settings: Settings, /, **options: Any) -> LLM:
    return FakeLLM(default=FakeReply("BLOCK: " + (argument or "no"), ttft=0.1))


register_llm("test-blocker", _blocker)


async def test_a_session_answers_a_blocked_topic_with_the_configured_response(
    store: Store, settings: Settings
) -> None:
    agent = spec(input={"blocked_topics": {"keywords": ["lawsuit"], "response": "Not that."}})
    llm = FakeLLM([FakeReply("Let's sue!")])
    async with session_for(agent, llm, store, settings) as session:
        reply = await session.send_text("about my lawsuit")
    assert reply == "Not that."
    assert llm.requests == []


async def test_a_session_never_sends_a_card_number_in_a_delta(
    store: Store, settings: Settings
) -> None:
    deltas: list[str] = []
    llm = FakeLLM([FakeReply(["Card ", "4111 1111", " 1111 1111", " noted."])])
    async with session_for(spec(), llm, store, settings) as session:
        session.on("bot_text_delta", lambda turn, delta: deltas.append(delta))
        await session.send_text("read my card back")
    assert "".join(deltas) == "Card ending in 1111 noted."


async def test_a_sessions_classifier_stops_the_reply(store: Store, settings: Settings) -> None:
    agent = spec(input={"classifier": {"llm": "test-blocker:unsafe", "response": "No."}})
    words = [f"w{i} " for i in range(50)]
    async with session_for(
        agent, FakeLLM([FakeReply(words, token_delay=0.01)]), store, settings
    ) as session:
        reply = await session.send_text("something unsafe")
        user = next(t for t in session.turns if isinstance(t, UserTurn))
    assert reply == "No."
    assert user.metadata["guardrails"][0]["check"] == "classifier"


async def test_a_standalone_session_stores_masked_turns(store: Store, settings: Settings) -> None:
    llm = FakeLLM([FakeReply("Noted.")])
    async with session_for(spec(redact_stored_pii=True), llm, store, settings) as session:
        await session.send_text(f"my card is {CARD}")
        conversation = session.id
    stored = [r for r in await store.load_turns(conversation) if r["kind"] == "user_text"]
    assert stored[0]["data"]["content"] == "my card is [card ending 1111]"
