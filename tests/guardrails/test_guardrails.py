"""Guardrails in a reply: what the caller says is checked before the model, what the model says
is filtered before anyone hears it, an LLM classifier stops a reply it objects to, and a
caller's personal data stays out of the store and the feed when the agent asks for that."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.voice.fakes import Call
from voxline.conversation.memory import ConversationMemory
from voxline.conversation.turns import BotTurn, HandoffTurn, ToolCallTurn, UserTurn
from voxline.guardrails import GuardrailContext, Rewrite, Trip, guardrail
from voxline.guardrails.checks import unregister_guardrail
from voxline.guardrails.runner import Guardrails
from voxline.guardrails.storage import record_transform
from voxline.providers.llm.fake import FakeLLM, FakeReply
from voxline.server.feed import FeedPublisher, call_channel
from voxline.settings import Settings
from voxline.store.base import ConversationRecord, Store
from voxline.store.brokers import InProcessBroker
from voxline.tools.decorator import tool

from .conftest import EngineHarness, guards, session_for, spec, wire

CARD = "4111 1111 1111 1111"
CARD_SPLIT = ["Your card ", "4111 11", "11 1111 ", "1111 is on file", ". Anything else?"]


# -- personal data in the store and the feed ---------------------------------------------------
async def test_a_callers_card_number_is_masked_in_the_stored_turn_and_the_feed(
    store: Store, settings: Settings
) -> None:
    agent = spec(redact_stored_pii=True)
    llm = FakeLLM([FakeReply("Thanks, I have noted it.")])
    memory = ConversationMemory("conv-card")
    await memory.open(
        store,
        ConversationRecord(id="conv-card", agent="guarded"),
        transform=record_transform(agent.guardrails),
    )
    session = session_for(agent, llm, store, settings, memory=memory)
    broker = InProcessBroker()
    feed = broker.subscribe(call_channel("conv-card"))
    publisher = FeedPublisher(broker, "conv-card", "guarded")
    publisher.attach(session)
    await session.start(greet=False)

    await session.send_text(f"my card is {CARD} and my email is jane@example.com")
    await session.wait_idle()
    await session.close()
    await publisher.close()
    await memory.close()

    # The live model saw what the caller said ...
    assert CARD in str(llm.requests[0].messages[-1].content)
    live = next(t for t in session.turns if isinstance(t, UserTurn))
    assert CARD in live.content
    # ... the store did not.
    stored = [r for r in await store.load_turns("conv-card") if r["kind"] == "user_text"]
    assert stored[0]["data"]["content"] == ("my card is [card ending 1111] and my email is [email]")
    assert stored[0]["version"] == live.version  # masking keeps the version guard working
    events = []
    await broker.close()
    async for event in feed:
        events.append(event)
    said = [e for e in events if e["type"] == "user_utterance"]
    assert said[0]["text"] == "my card is [card ending 1111] and my email is [email]"
    assert all(CARD not in str(e) for e in events)


async def test_without_the_option_the_store_keeps_what_was_said(
    store: Store, settings: Settings
) -> None:
    assert record_transform(spec().guardrails) is None
    memory = ConversationMemory("conv-plain")
    await memory.open(store, ConversationRecord(id="conv-plain"), transform=None)
    session = session_for(spec(), FakeLLM([FakeReply("Noted.")]), store, settings, memory=memory)
    await session.start(greet=False)
    await session.send_text(f"card {CARD}")
    await session.close()
    await memory.close()
    stored = [r for r in await store.load_turns("conv-plain") if r["kind"] == "user_text"]
    assert stored[0]["data"]["content"] == f"card {CARD}"


# -- the reply stream --------------------------------------------------------------------------
async def test_a_card_number_in_the_reply_never_appears_in_any_delta() -> None:
    harness = EngineHarness(guards())
    turn = await harness.ask("what card do you have?", FakeLLM([FakeReply(CARD_SPLIT)]))

    assert harness.said == "Your card ending in 1111 is on file. Anything else?"
    assert turn is not None and turn.content == harness.said
    digits = "".join(ch for delta in harness.deltas for ch in delta if ch.isdigit())
    assert digits == "1111"  # the last four, once; never a run of the number
    assert harness.deltas[0] == "Your card "  # released before the number was known
    assert harness.trips[0]["trip"].check == "card_number"
    assert turn.metadata["guardrails"][0] == {
        "check": "card_number",
        "stage": "output",
        "action": "rewrite",
        "reason": "card number masked",
    }


async def test_a_card_number_is_cut_before_it_reaches_text_to_speech(
    store: Store, settings: Settings
) -> None:
    call = Call(
        store,
        settings,
        vad=[(0.0, 0.3), (0.9, 1.0)],
        words=[(0.35, 0.6, "my"), (0.6, 0.9, "card"), (0.9, 1.25, "please")],
        replies=[FakeReply(CARD_SPLIT)],
    )
    await call.start()
    wire(call.session)
    await call.run(8.0)
    await call.close()

    spoken = " ".join(call.tts.texts)
    assert "ending in 1111" in spoken
    assert all(sum(ch.isdigit() for ch in text) <= 4 for text in call.tts.texts)


async def test_unprofessional_words_are_rewritten_or_cut() -> None:
    rewrite = spec(output={"professional_language": {"words": ["damn"]}})
    harness = EngineHarness(Guardrails(rewrite.guardrails))
    await harness.ask("hi", FakeLLM([FakeReply(["That is da", "mn good news."])]))
    assert harness.said == "That is good news."

    cut = spec(
        response="Let me put that differently.",
        output={"professional_language": {"words": ["damn"], "action": "cut"}},
    )
    harness = EngineHarness(Guardrails(cut.guardrails))
    llm = FakeLLM([FakeReply(["Sure. ", "That is da", "mn good. ", "More to come."])])
    turn = await harness.ask("hi", llm)
    assert harness.said == "Sure. Let me put that differently."
    assert "damn" not in " ".join(t.content for t in harness.turns if isinstance(t, BotTurn))
    assert turn is not None and turn.content == "Let me put that differently."
    assert [t["trip"].action for t in harness.trips] == ["respond"]


async def test_a_custom_output_check_rewrites_a_sentence() -> None:
    @guardrail(name="no_prices")
    def no_prices(text: str, ctx: GuardrailContext) -> Rewrite | None:
        return Rewrite("I'll send you the price by text. ") if "$" in text else None

    try:
        harness = EngineHarness(guards(output={"custom": ["no_prices"]}))
        await harness.ask("how much?", FakeLLM([FakeReply("Sure. It costs $40. Bye.")]))
    finally:
        unregister_guardrail("no_prices")
    assert harness.said == "Sure. I'll send you the price by text. Bye."


# -- input checks ------------------------------------------------------------------------------
async def test_a_tripped_input_guardrail_gives_the_configured_response() -> None:
    config = spec(
        input={
            "blocked_topics": {
                "keywords": ["lawsuit"],
                "response": "I can't talk about legal matters.",
            }
        }
    )
    harness = EngineHarness(Guardrails(config.guardrails))
    llm = FakeLLM([FakeReply("Sure, let me help you sue them.")])
    turn = await harness.ask("I want to file a LAWSUIT against you", llm)

    assert turn is not None and turn.content == "I can't talk about legal matters."
    assert harness.said == "I can't talk about legal matters."
    assert llm.requests == []  # the model never saw it
    user = next(t for t in harness.turns if isinstance(t, UserTurn))
    assert user.metadata["guardrails"] == [
        {
            "check": "blocked_topic",
            "stage": "input",
            "action": "respond",
            "reason": "a blocked topic",
        }
    ]
    assert [(t["stage"], t["trip"].check) for t in harness.trips] == [("input", "blocked_topic")]


async def test_pii_is_noted_by_default_and_can_trip() -> None:
    noted = EngineHarness(guards(input={"pii": {"kinds": ["card", "email"]}}))
    llm = FakeLLM([FakeReply("Thanks.")])
    await noted.ask(f"card {CARD}, mail a@b.co", llm)
    user = next(t for t in noted.turns if isinstance(t, UserTurn))
    assert user.metadata["guardrails"] == [
        {"check": "pii", "stage": "input", "action": "note", "found": {"card": 1, "email": 1}}
    ]
    assert len(llm.requests) == 1 and noted.trips == []

    blocking = spec(
        input={"pii": {"kinds": ["national_id"], "action": "respond", "response": "Please don't."}}
    )
    harness = EngineHarness(Guardrails(blocking.guardrails))
    turn = await harness.ask("my SSN is 123-45-6789", FakeLLM([FakeReply("ok")]))
    assert turn is not None and turn.content == "Please don't."
    assert "123-45-6789" not in str(harness.trips[0]["trip"])  # the reason names, never shows


async def test_a_custom_input_check_can_be_a_coroutine() -> None:
    seen: list[GuardrailContext] = []

    @guardrail
    async def no_competitors(text: str, ctx: GuardrailContext) -> Trip | None:
        seen.append(ctx)
        return Trip("", "mentions a competitor") if "acme" in text.lower() else None

    try:
        harness = EngineHarness(guards(input={"custom": ["no_competitors"]}))
        llm = FakeLLM([FakeReply("Happy to help.")])
        await harness.ask("Tell me about your prices", llm)
        turn = await harness.ask("Is Acme cheaper?", llm)
    finally:
        unregister_guardrail("no_competitors")
    assert turn is not None and turn.content.startswith("Sorry, I can't help with that.")
    assert len(llm.requests) == 1
    assert seen[0].stage == "input" and seen[0].conversation_id == "conv-guard"


async def test_a_handoff_runs_the_channels_transfer_tool() -> None:
    transfers: list[str] = []

    @tool
    def transfer_to_human(reason: str) -> str:
        """Transfer the caller.

        Args:
            reason: Why.
        """
        transfers.append(reason)
        return "transferring"

    config = spec(input={"blocked_topics": {"keywords": ["refund"], "action": "handoff"}})
    harness = EngineHarness(Guardrails(config.guardrails), tools=[transfer_to_human])
    turn = await harness.ask("I want a refund", FakeLLM([]))
    assert turn is not None and turn.content.startswith("Let me transfer you")
    assert transfers == ["guardrail blocked_topic: a blocked topic"]
    assert any(isinstance(t, ToolCallTurn) for t in harness.turns)

    without = EngineHarness(Guardrails(config.guardrails))
    await without.ask("refund now", FakeLLM([]))
    handoff = next(t for t in without.turns if isinstance(t, HandoffTurn))
    assert handoff.target == "human" and handoff.data == {"guardrail": "blocked_topic"}


# -- the LLM classifier ------------------------------------------------------------------------
def classifier_spec(**extra: Any) -> Any:
    return spec(
        input={"classifier": {"llm": "fake", "response": "I can't help with that.", **extra}}
    )


async def test_a_classifier_that_trips_mid_reply_stops_it() -> None:
    classifier = FakeLLM([FakeReply("BLOCK: asks for someone else's account", ttft=0.15)])
    harness = EngineHarness(Guardrails(classifier_spec().guardrails, classifier_llm=classifier))
    words = [f"word{i} " for i in range(60)]
    reply = FakeLLM([FakeReply(words, token_delay=0.01)])
    turn = await harness.ask("read me my neighbour's balance", reply)

    assert turn is not None and turn.content == "I can't help with that."
    bots = [t for t in harness.turns if isinstance(t, BotTurn)]
    assert len(bots) == 2
    stopped = bots[0]
    assert stopped.interrupted and 0 < len(stopped.content.split()) < 60
    assert harness.deltas[-1].strip() == "I can't help with that."
    assert harness.interrupted == [stopped]
    user = next(t for t in harness.turns if isinstance(t, UserTurn))
    assert user.metadata["guardrails"][0]["check"] == "classifier"
    assert user.metadata["guardrails"][0]["reason"] == "asks for someone else's account"
    assert classifier.requests[0].messages[-1].content == "read me my neighbour's balance"


async def test_a_classifier_that_passes_adds_no_latency() -> None:
    classifier = FakeLLM([FakeReply("ALLOW", ttft=1.0)])
    harness = EngineHarness(Guardrails(classifier_spec().guardrails, classifier_llm=classifier))
    started = time.monotonic()
    turn = await harness.ask("hello", FakeLLM([FakeReply("Hi there, how can I help?")]))
    took = time.monotonic() - started

    assert took < 0.5  # the reply did not wait for the classifier's second
    assert turn is not None and turn.content == "Hi there, how can I help?"
    await harness.engine.tasks.wait()
    assert harness.trips == []
    await harness.engine.finish_tools()


async def test_a_classifier_verdict_after_the_reply_stops_what_is_still_playing() -> None:
    classifier = FakeLLM([FakeReply("BLOCK", ttft=0.1)])
    harness = EngineHarness(
        Guardrails(classifier_spec().guardrails, classifier_llm=classifier), auto_deliver=False
    )
    answer = await harness.ask("hello", FakeLLM([FakeReply("A long answer, still playing.")]))
    assert answer is not None and harness.trips == []
    await asyncio.wait_for(harness.engine.tasks.wait(), 2)

    assert answer.id not in harness.turns  # nothing of it had been played: it is gone
    assert harness.interrupted == [None]  # the voice channel stops its audio
    assert harness.trips[0]["late"] is True
    assert harness.deltas[-1] == "I can't help with that."
    await harness.engine.finish_tools()


async def test_a_classifier_that_fails_or_times_out_lets_the_turn_through() -> None:
    slow = FakeLLM([FakeReply("BLOCK", ttft=5.0)])
    harness = EngineHarness(
        Guardrails(classifier_spec(timeout=0.05).guardrails, classifier_llm=slow)
    )
    turn = await harness.ask("hello", FakeLLM([FakeReply("Hi!", ttft=0.2)]))
    assert turn is not None and turn.content == "Hi!"
    assert harness.trips == []
    await harness.engine.finish_tools()


@pytest.mark.parametrize("fixed", ["Your card 4111111111111111 is charged."])
async def test_fixed_text_is_masked_too(fixed: str) -> None:
    harness = EngineHarness(guards())
    turn = harness.engine.say(fixed)
    assert turn.content == "Your card ending in 1111 is charged."
    assert harness.deltas == [turn.content]
