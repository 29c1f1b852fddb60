"""Summaries that stay summaries: budget, loops, the newest turns, a stable fact sheet.

The model is scripted: each test states what a misbehaving model says (the failures a small
local model showed) and checks what the summarizer stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from voxline.conversation.summarizer import Summarizer
from voxline.conversation.summary_check import (
    Summary,
    carry_facts,
    covers,
    key_terms,
    loop_start,
    words,
)
from voxline.conversation.summary_policy import SummaryPolicy
from voxline.conversation.turns import SystemTurn, TurnStore
from voxline.providers.llm.base import LLMEvent, LLMRequest, TextDelta
from voxline.providers.llm.fake import FakeLLM


def policy(**overrides: Any) -> SummaryPolicy:
    values: dict[str, Any] = {
        "max_tokens": None,
        "max_turns": 5,
        "keep_last": 2,
        "debounce_turns": 0,
        "max_summary_words": 40,
    }
    values.update(overrides)
    return SummaryPolicy(**values)


def order_call(store: TurnStore) -> None:
    store.add_user_text("Hi, this is Maria Lopez, order A-58213.")
    store.add_bot_text("Hello Maria. Order A-58213 shipped on March 3.")
    store.add_user_text("Please refund it, it arrived broken.")
    store.add_bot_text("I have refunded 249 dollars to your card.")
    store.add_user_text("Thanks.")
    store.add_bot_text("Anything else?")


THINGS = [
    "a broken lamp",
    "her sister's birthday",
    "weather in Lyon",
    "parking downtown",
    "an old invoice",
    "train strikes",
    "a loyalty card",
    "gift wrapping",
    "tax forms",
    "opening hours",
    "a lost umbrella",
    "printer ink",
]
LONG = " ".join(f"On day {n} the caller mentioned {thing}." for n, thing in enumerate(THINGS))
FITS = (
    "Maria Lopez asked for a refund of order A-58213, which arrived broken; 249 dollars refunded."
)


class WordByWord:
    """Streams each scripted reply a word at a time and counts the words the summarizer took
    before it stopped reading (and closed the stream)."""

    label = "scripted"

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.requests: list[LLMRequest] = []
        self.taken: list[int] = []
        self.closed = 0

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        self.requests.append(request)
        reply = self.replies.pop(0)
        self.taken.append(0)
        try:
            for word in reply.split(" "):
                self.taken[-1] += 1
                yield TextDelta(word + " ")
        finally:
            self.closed += 1

    async def aclose(self) -> None:
        return None


def stored(store: TurnStore) -> str:
    summary = store.all()[0]
    assert isinstance(summary, SystemTurn) and summary.summary
    return summary.content


# -- the word budget ---------------------------------------------------------------------------


async def test_an_answer_over_budget_is_asked_for_again_and_the_retry_is_kept() -> None:
    store = TurnStore("c")
    order_call(store)
    llm = FakeLLM([LONG, FITS])

    await Summarizer(policy(), llm).summarize(store)

    assert words(LONG) > 40
    assert stored(store) == FITS
    assert len(llm.requests) == 2
    retry = llm.requests[1].messages[-1].content or ""
    assert retry.startswith("Your previous summary was rejected: it ran past")
    assert "at most 40 words" in retry


async def test_a_summary_over_budget_twice_is_trimmed_at_a_sentence_keeping_the_facts() -> None:
    store = TurnStore("c")
    order_call(store)
    synopsis = ". ".join(LONG.split(". ")[:5]) + "."
    answer = synopsis + "\nFacts:\n- Name: Maria Lopez\n- Order: A-58213\n- Refund: 249 dollars"
    assert 40 < words(answer) < 80  # over budget, not a runaway: the whole answer comes
    llm = FakeLLM([answer, answer])

    await Summarizer(policy(), llm).summarize(store)

    text = stored(store)
    assert words(text) <= 40
    assert text.startswith("On day 0 the caller mentioned a broken lamp.")
    assert text.splitlines()[0].endswith(".")  # whole sentences only
    assert "- Name: Maria Lopez\n- Order: A-58213\n- Refund: 249 dollars" in text


# -- loops -------------------------------------------------------------------------------------


async def test_a_looping_answer_is_cut_where_the_loop_starts_and_asked_for_again() -> None:
    store = TurnStore("c")
    order_call(store)
    loop = "The user asked if the order shipped. " * 100
    llm = WordByWord(loop.strip(), FITS)

    await Summarizer(policy(max_summary_words=200), llm).summarize(store)

    assert llm.taken[0] < 30  # stopped reading a few sentences in, not after 700 words
    assert llm.closed == 2
    assert "rejected: it repeated itself" in (llm.requests[1].messages[-1].content or "")
    assert stored(store) == FITS


async def test_a_loop_the_retry_repeats_leaves_the_loop_said_once() -> None:
    store = TurnStore("c")
    order_call(store)
    loop = "Maria wants a refund for A-58213 and 249 dollars back. " * 50
    llm = WordByWord(loop.strip(), loop.strip())

    await Summarizer(policy(max_summary_words=200), llm).summarize(store)

    assert stored(store) == (
        "Maria wants a refund for A-58213 and 249 dollars back.\n"
        "Latest: User: Please refund it, it arrived broken."  # "arrived broken" was not said
    )


async def test_a_phrase_repeated_with_new_endings_is_a_loop_too() -> None:
    text = " ".join(f"The user asked if item {n} was there." for n in range(8))
    start = loop_start(text)
    assert start is not None
    assert text[:start].strip() == "The user asked if item 0 was there."


def test_an_ordinary_summary_is_not_a_loop() -> None:
    text = (
        "Maria Lopez called about order A-58213, which arrived broken. The agent refunded 249 "
        "dollars to her card and she thanked the agent.\nFacts:\n- Name: Maria Lopez\n"
        "- Order: A-58213\n- Refund: 249 dollars to the card"
    )
    assert loop_start(text) is None


# -- the newest turns --------------------------------------------------------------------------


async def test_a_re_summary_that_copies_the_earlier_one_still_covers_the_newest_turns() -> None:
    store = TurnStore("c")
    order_call(store)
    first = "Maria Lopez asked about order A-58213.\nFacts:\n- Name: Maria Lopez"
    llm = FakeLLM([first, first])  # the second time the model copies itself word for word
    summarizer = Summarizer(policy(max_summary_words=80), llm)
    await summarizer.summarize(store)
    store.add_user_text("Can you send the replacement to 12 Rue Cler, Paris?")
    store.add_bot_text("Done: the replacement ships to 12 Rue Cler on Friday.")
    store.add_user_text("Great.")
    store.add_bot_text("Goodbye.")

    await summarizer.summarize(store)

    text = stored(store)
    assert text.startswith(first)
    latest = [line for line in text.splitlines() if line.startswith("Latest: ")]
    assert latest == [
        "Latest: User: Can you send the replacement to 12 Rue Cler, Paris?",
        "Latest: Agent: Done: the replacement ships to 12 Rue Cler on Friday.",
    ]
    assert words(text) <= 80


async def test_a_summary_that_mentions_the_newest_turns_gets_nothing_added() -> None:
    store = TurnStore("c")
    order_call(store)
    llm = FakeLLM([FITS])
    await Summarizer(policy(), llm).summarize(store)
    assert "Latest:" not in stored(store)


def test_coverage_needs_every_number_and_half_the_key_words() -> None:
    line = "Agent: I have refunded 249 dollars to your card ending 4242."
    assert key_terms(line) >= {"249", "4242", "refunded", "dollars"}
    assert covers("Refunded 249 dollars to the card ending 4242.", line)
    assert not covers("Refunded 249 dollars to the card.", line)  # a number is missing
    assert not covers("Something about 249 and 4242.", line)  # the words are missing


# -- the fact sheet ----------------------------------------------------------------------------


async def test_the_fact_sheet_survives_a_re_summary_except_what_was_corrected() -> None:
    store = TurnStore("c")
    order_call(store)
    first = (
        "Maria Lopez asked for a refund of order A-58213, which arrived broken; 249 dollars "
        "refunded.\nFacts:\n- Name: Maria Lopez\n- Order: A-58213\n- Phone: 555-0100\n"
        "- Delivery address: 3 Main Street"
    )
    second = (
        "Maria moved; the replacement goes to 12 Rue Cler.\nFacts:\n- Name: Maria Lopez\n"
        "- Delivery address: 12 Rue Cler, Paris"
    )
    llm = FakeLLM([first, second])
    summarizer = Summarizer(policy(max_summary_words=80), llm)
    await summarizer.summarize(store)
    store.add_user_text("I moved: send the replacement to 12 Rue Cler, Paris.")
    store.add_bot_text("Noted, the replacement goes to 12 Rue Cler.")
    store.add_user_text("Thanks.")
    store.add_bot_text("Goodbye.")

    await summarizer.summarize(store)

    facts = Summary.parse(stored(store)).facts
    assert facts == [
        "Name: Maria Lopez",
        "Delivery address: 12 Rue Cler, Paris",  # corrected: the old address is gone
        "Order: A-58213",  # dropped by the model, carried over
        "Phone: 555-0100",
    ]


def test_a_fact_said_elsewhere_in_the_new_summary_is_not_carried_twice() -> None:
    previous = Summary.parse("Facts:\n- Order: A-58213\n- Refund of 249 dollars")
    current = Summary.parse("Order A-58213 was refunded: 249 dollars.")
    assert carry_facts(previous, current) == []


def test_trimming_drops_synopsis_sentences_before_facts_and_never_the_latest_lines() -> None:
    summary = Summary(
        synopsis=["One two three four five.", "Six seven eight nine ten."],
        facts=["Name: Maria", "Order: A-1"],
        latest=["User: where is my parcel"],
    )
    fitted = summary.fit(18)
    assert fitted.synopsis == ["One two three four five."]
    assert fitted.facts == ["Name: Maria", "Order: A-1"]
    assert fitted.latest == ["User: where is my parcel"]
    assert words(fitted.render()) == 18
    assert fitted.fit(8).latest == ["User: where is my parcel"]


def test_a_run_on_sentence_is_cut_at_a_word_rather_than_dropped() -> None:
    summary = Summary(synopsis=["one " * 30 + "end."], facts=["Name: Maria"])
    fitted = summary.fit(10)
    assert fitted.facts == []
    assert fitted.synopsis == [" ".join(["one"] * 10) + "…"]


def test_a_label_before_the_synopsis_is_dropped_and_word_forms_count_as_mentions() -> None:
    parsed = Summary.parse("Summary: Maria's lamp will arrive by Thursday, free of charge.")
    assert parsed.synopsis == ["Maria's lamp will arrive by Thursday, free of charge."]
    assert covers(parsed.render(), "Agent: Express delivery arrives Thursday, free of charge.")


async def test_a_latest_line_the_next_summary_leaves_out_is_carried_as_a_fact() -> None:
    store = TurnStore("c")
    order_call(store)
    first = "Maria Lopez asked about order A-58213.\nFacts:\n- Name: Maria Lopez"
    llm = FakeLLM([first, "Maria Lopez called.\nFacts:\n- Name: Maria Lopez"])
    summarizer = Summarizer(policy(max_summary_words=120), llm)
    await summarizer.summarize(store)
    added = Summary.parse(stored(store)).latest
    assert added  # the refund turns were not in the first answer
    for text in ("Where is my replacement?", "On its way.", "Thanks.", "Bye."):
        store.add_user_text(text)

    await summarizer.summarize(store)

    parsed = Summary.parse(stored(store))
    for line in added:
        assert line in parsed.facts
