"""Summarization: thresholds, where the cut falls, what the model is shown and what it replaces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from voxline.conversation.summarizer import Summarizer, estimate_tokens, render_turn
from voxline.conversation.summary_policy import SummaryPolicy
from voxline.conversation.turns import BotTurn, Turn, TurnStore
from voxline.providers.llm.base import LLMError, LLMRequest
from voxline.providers.llm.fake import FakeLLM, FakeReply


def policy(**overrides: Any) -> SummaryPolicy:
    values: dict[str, Any] = {
        "max_tokens": None,
        "max_turns": 5,
        "keep_last": 2,
        "debounce_turns": 0,
    }
    values.update(overrides)
    return SummaryPolicy(**values)


def chat(store: TurnStore, count: int, start: int = 0) -> None:
    """Alternating user and agent turns numbered from `start`."""
    for n in range(start, start + count):
        if n % 2 == 0:
            store.add_user_text(f"user says {n}")
        else:
            store.add_bot_text(f"agent says {n}")


def contents(store: TurnStore) -> list[tuple[int, str]]:
    """(seq, what the turn says) for every turn, in order: the shape tests compare. A summary
    shows its first line only: the "Latest:" lines the summarizer adds for newest turns a
    one-word scripted summary cannot mention are tested on their own below."""
    return [(turn.seq, render_turn(turn).split("\n")[0]) for turn in store.all()]


def slow_llm() -> tuple[FakeLLM, asyncio.Event]:
    """A model that takes a moment to answer, and an event set once it holds the request."""
    asked = asyncio.Event()

    def respond(request: LLMRequest) -> FakeReply:
        asked.set()
        return FakeReply("summary", ttft=0.01)

    return FakeLLM(respond), asked


def transcript(request: LLMRequest) -> str:
    content = request.messages[-1].content
    assert content is not None
    return content


def instructions(request: LLMRequest) -> str:
    content = request.messages[0].content
    assert request.messages[0].role == "system" and content is not None
    return content


# -- policy ----------------------------------------------------------------------------------


def test_policy_defaults_are_valid_and_load_from_json() -> None:
    assert SummaryPolicy().max_tokens is not None
    loaded = SummaryPolicy.model_validate_json(
        '{"max_turns": 20, "llm": " openai:gpt-4.1-mini ", "language": "French"}'
    )
    assert loaded.max_turns == 20
    assert loaded.llm == "openai:gpt-4.1-mini"
    assert SummaryPolicy.model_validate_json(loaded.model_dump_json()) == loaded


def test_disabled_policy_needs_no_threshold() -> None:
    assert not SummaryPolicy(enabled=False, max_tokens=None).enabled


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_tokens": None}, "has no threshold"),
        ({"keep_last": 0}, "keep_last"),
        ({"max_turns": 6, "keep_last": 6}, "max_turns (6) must be greater than keep_last (6)"),
        ({"llm": "  "}, "non-empty"),
        ({"language": ""}, "non-empty"),
        ({"max_summary_words": 5}, "max_summary_words"),
        ({"debounce_turns": -1}, "debounce_turns"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_token": 100}, "max_token"),
    ],
)
def test_policy_rejects_bad_values_with_a_clear_message(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as error:
        SummaryPolicy(**values)
    assert message in str(error.value)


# -- when to summarize -------------------------------------------------------------------------


def test_estimate_counts_about_four_characters_per_token_including_tool_traffic() -> None:
    store = TurnStore("c")
    store.add_user_text("hello")  # "User: hello": 11 characters
    assert estimate_tokens(store.all()) == 3
    store.add_tool_call("call_1", "lookup", '{"q": "' + "a" * 100 + '"}')
    store.add_tool_result("call_1", "lookup", "b" * 200)
    assert estimate_tokens(store.all()) > 75


def test_token_threshold_counts_tool_results() -> None:
    store = TurnStore("c")
    chat(store, 4)
    summarizer = Summarizer(policy(max_tokens=60, max_turns=None), FakeLLM())
    assert estimate_tokens(store.all()) < 60
    assert not summarizer.should_summarize(store.all())
    store.add_tool_call("call_1", "lookup", "{}")
    store.add_tool_result("call_1", "lookup", "x" * 200)
    store.add_bot_text("done")
    assert summarizer.should_summarize(store.all())


async def test_turn_threshold_does_not_count_earlier_summaries() -> None:
    store = TurnStore("c")
    summarizer = Summarizer(policy(max_turns=5), FakeLLM(["summary"]))
    chat(store, 5)
    assert not summarizer.should_summarize(store.all())
    store.add_user_text("one more")
    assert summarizer.should_summarize(store.all())

    assert await summarizer.summarize(store) is not None
    chat(store, 3, start=6)
    assert len(store) == 6  # the summary, two kept turns, three new ones
    assert not summarizer.should_summarize(store.all())
    store.add_user_text("and another")
    assert summarizer.should_summarize(store.all())


def test_disabled_policy_never_summarizes() -> None:
    store = TurnStore("c")
    chat(store, 30)
    assert not Summarizer(SummaryPolicy(enabled=False), FakeLLM()).should_summarize(store.all())


async def test_debounce_waits_for_enough_new_turns_after_a_summary() -> None:
    store = TurnStore("c")
    summarizer = Summarizer(policy(max_turns=3, debounce_turns=4), FakeLLM(["summary"]))
    chat(store, 6)
    assert summarizer.should_summarize(store.all())
    await summarizer.summarize(store)

    chat(store, 3, start=6)  # over max_turns again, but only three turns since the summary
    assert not summarizer.should_summarize(store.all())
    store.add_user_text("fourth new turn")
    assert summarizer.should_summarize(store.all())


async def test_nothing_to_do_when_the_conversation_fits_in_keep_last() -> None:
    store = TurnStore("c")
    chat(store, 3)
    llm = FakeLLM(["summary"])
    summarizer = Summarizer(policy(max_tokens=1, max_turns=None, keep_last=3), llm)
    assert not summarizer.should_summarize(store.all())
    assert await summarizer.summarize(store) is None
    assert llm.requests == []


async def test_a_summary_alone_before_the_kept_turns_is_not_summarized_again() -> None:
    store = TurnStore("c")
    chat(store, 6)
    llm = FakeLLM(["summary", "summary of the summary"])
    summarizer = Summarizer(policy(max_tokens=1, max_turns=None), llm)
    await summarizer.summarize(store)

    assert not summarizer.should_summarize(store.all())
    assert await summarizer.summarize(store) is None
    assert len(llm.requests) == 1


# -- what gets replaced ----------------------------------------------------------------------


async def test_summary_replaces_the_old_turns_at_the_first_seq_and_keeps_the_rest_in_order() -> (
    None
):
    store = TurnStore("c")
    store.add_user_text("Hi, this is Maria Lopez.")
    store.add_bot_text("Hello Maria, how can I help?")
    store.add_user_text("Where is my order A-58213?")
    store.add_tool_call("call_1", "lookup_order", '{"order_id": "A-58213"}')
    store.add_tool_result("call_1", "lookup_order", '{"status": "shipped", "total": "$249.90"}')
    store.add_bot_text("It shipped, total $249.90. I will email you the tracking number.")
    store.add_user_text("Thanks. Can you also change the address?")
    store.add_bot_text("Sure, what is the new address?")
    kept = [turn.id for turn in store.all()[-2:]]
    said = (
        "Maria asked about order A-58213: it shipped, total $249.90, tracking number to follow "
        "by email.\nFacts:\n- Name: Maria Lopez"
    )
    llm = FakeLLM([said])

    summary = await Summarizer(policy(), llm).summarize(store)

    assert summary is not None and summary.summary
    assert summary.content == said  # it covers the newest turns: nothing is added
    assert [turn.id for turn in store.all()] == [summary.id, *kept]
    assert contents(store) == [
        (0, f"Earlier summary: {said.splitlines()[0]}"),
        (6, "User: Thanks. Can you also change the address?"),
        (7, "Agent: Sure, what is the new address?"),
    ]
    shown = transcript(llm.requests[0])
    for fact in ("Maria Lopez", "A-58213", "$249.90", 'Tool call lookup_order({"order_id"'):
        assert fact in shown
    assert "change the address" not in shown


async def test_keep_last_turns_are_untouched() -> None:
    store = TurnStore("c")
    chat(store, 10)
    tail = [(turn.id, turn.seq, turn.version) for turn in store.all()[-4:]]
    await Summarizer(policy(keep_last=4), FakeLLM(["summary"])).summarize(store)
    assert [(turn.id, turn.seq, turn.version) for turn in store.all()[1:]] == tail


async def test_cut_between_a_call_and_its_result_keeps_them_together() -> None:
    store = TurnStore("c")
    chat(store, 3)
    store.add_tool_call("call_1", "get_weather", '{"city": "Paris"}')
    store.add_tool_result("call_1", "get_weather", "sunny")  # keep_last=2 would cut just before
    store.add_bot_text("It is sunny.")
    llm = FakeLLM(["summary"])

    await Summarizer(policy(), llm).summarize(store)

    assert [line for _, line in contents(store)] == [
        "Earlier summary: summary",
        'Tool call get_weather({"city": "Paris"})',
        "Tool result (get_weather): sunny",
        "Agent: It is sunny.",
    ]
    assert "get_weather" not in transcript(llm.requests[0])


@pytest.mark.parametrize("keep_last", [2, 3, 4])
async def test_parallel_calls_and_their_results_stay_one_group(keep_last: int) -> None:
    store = TurnStore("c")
    chat(store, 3)
    store.add_tool_call("call_a", "get_weather", '{"city": "Paris"}')
    store.add_tool_call("call_b", "get_weather", '{"city": "Rome"}')
    store.add_tool_result("call_a", "get_weather", "sunny")
    store.add_tool_result("call_b", "get_weather", "rain")
    store.add_bot_text("Sunny in Paris, rain in Rome.")
    group = [turn.id for turn in store.all()[3:]]

    await Summarizer(policy(keep_last=keep_last), FakeLLM(["summary"])).summarize(store)

    assert [turn.id for turn in store.all()[1:]] == group


async def test_a_whole_tool_step_is_summarized_when_it_lies_before_the_cut() -> None:
    store = TurnStore("c")
    store.add_user_text("Weather in Paris and Rome?")
    store.add_tool_call("call_a", "get_weather", '{"city": "Paris"}')
    store.add_tool_call("call_b", "get_weather", '{"city": "Rome"}')
    store.add_tool_result("call_a", "get_weather", "sunny")
    store.add_tool_result("call_b", "get_weather", "rain")
    store.add_bot_text("Sunny in Paris, rain in Rome.")
    llm = FakeLLM(["summary"])

    await Summarizer(policy(keep_last=1), llm).summarize(store)

    assert len(store) == 2
    assert transcript(llm.requests[0]).count("Tool result (get_weather)") == 2


async def test_a_call_still_waiting_for_its_result_is_kept_with_everything_after_it() -> None:
    store = TurnStore("c")
    chat(store, 3)
    store.add_tool_call("call_1", "refund", '{"amount": 40}', approval_id="appr_1")
    chat(store, 3, start=3)
    waiting = [turn.id for turn in store.all()[3:]]

    await Summarizer(policy(), FakeLLM(["summary"])).summarize(store)

    assert [turn.id for turn in store.all()[1:]] == waiting


async def test_the_kept_part_never_starts_with_an_orphan_tool_result() -> None:
    store = TurnStore("c")
    chat(store, 2)
    store.add_tool_result("call_gone", "lookup", "stale result")
    chat(store, 2, start=2)
    llm = FakeLLM(["summary"])

    await Summarizer(policy(keep_last=3), llm).summarize(store)

    assert [line for _, line in contents(store)] == [
        "Earlier summary: summary",
        "User: user says 2",
        "Agent: agent says 3",
    ]
    assert "stale result" in transcript(llm.requests[0])


async def test_a_prior_summary_is_fed_back_and_replaced() -> None:
    store = TurnStore("c")
    llm = FakeLLM(["Caller is Maria; order A-1.", "Maria's order A-1 is now refunded."])
    summarizer = Summarizer(policy(), llm)
    chat(store, 6)
    await summarizer.summarize(store)
    chat(store, 4, start=6)

    second = await summarizer.summarize(store)

    shown = transcript(llm.requests[1])
    assert "<earlier_summary>\nCaller is Maria; order A-1." in shown  # to update, not copy
    assert "Earlier summary:" not in shown
    assert second is not None and second.seq == 0
    summaries = [turn for turn in store.all() if turn.kind == "system"]
    assert summaries == [second]
    assert [seq for seq, _ in contents(store)] == [0, 8, 9]


async def test_transcript_renders_every_kind_of_turn_plainly() -> None:
    store = TurnStore("c")
    store.add_dtmf("5")
    store.add_system("Caller verified.")
    store.add_user_text("Refund please")
    interrupted = store.add_bot_text("I can refund the full")
    interrupted.interrupted = True
    store.add_bot_text("")  # a reply that only called tools says nothing
    store.add_tool_call("call_1", "refund", '{"amount": 40}')
    store.add_tool_result("call_1", "refund", "card declined", is_error=True)
    store.add_handoff("billing", "refund failed", {"amount": 40})
    chat(store, 1, start=1)
    llm = FakeLLM(["summary"])

    await Summarizer(policy(keep_last=1), llm).summarize(store)

    assert transcript(llm.requests[0]).endswith(
        "<transcript>\n"
        "DTMF: 5\n"
        "System note: Caller verified.\n"
        "User: Refund please\n"
        "Agent: I can refund the full [cut off by the user]\n"
        'Tool call refund({"amount": 40})\n'
        "Tool error (refund): card declined\n"
        'Handoff to billing (refund failed) {"amount": 40}\n'
        "</transcript>"
    )


# -- the prompt ------------------------------------------------------------------------------


async def test_prompt_asks_for_synopsis_and_facts_in_the_conversation_language() -> None:
    store = TurnStore("c")
    chat(store, 4)
    llm = FakeLLM(["summary"])
    await Summarizer(policy(max_summary_words=120), llm).summarize(store)
    prompt = instructions(llm.requests[0])
    assert "Facts:" in prompt
    assert "language the user speaks" in prompt
    assert "at most 120 words" in prompt
    assert "never invent" in prompt


async def test_prompt_names_the_configured_language() -> None:
    store = TurnStore("c")
    chat(store, 4)
    llm = FakeLLM(["résumé"])
    await Summarizer(policy(language="French"), llm).summarize(store)
    prompt = instructions(llm.requests[0])
    assert "Write in French." in prompt
    assert "language the user speaks" not in prompt


# -- a call in progress ----------------------------------------------------------------------


async def test_turns_added_while_the_model_thinks_survive() -> None:
    store = TurnStore("c")
    chat(store, 6)
    llm, asked = slow_llm()
    task = asyncio.create_task(Summarizer(policy(), llm).summarize(store))
    await asked.wait()
    store.add_user_text("said while summarizing")
    store.add_bot_text("answered while summarizing")

    summary = await task

    assert summary is not None
    assert contents(store) == [
        (0, "Earlier summary: summary"),
        (4, "User: user says 4"),
        (5, "Agent: agent says 5"),
        (6, "User: said while summarizing"),
        (7, "Agent: answered while summarizing"),
    ]


def _edit_second_turn(store: TurnStore) -> None:
    turn = store.all()[1]
    assert isinstance(turn, BotTurn)
    turn.content = "agent says 1, corrected"


def _delete_second_turn(store: TurnStore) -> None:
    store.delete(store.all()[1].id)


@pytest.mark.parametrize("change", [_edit_second_turn, _delete_second_turn])
async def test_summary_is_dropped_when_a_summarized_turn_changed_meanwhile(
    change: Callable[[TurnStore], None],
) -> None:
    store = TurnStore("c")
    chat(store, 6)
    llm, asked = slow_llm()
    task = asyncio.create_task(Summarizer(policy(), llm).summarize(store))
    await asked.wait()
    change(store)
    before = contents(store)

    assert await task is None
    assert contents(store) == before


async def test_only_one_summary_runs_at_a_time_per_store() -> None:
    store = TurnStore("c")
    chat(store, 6)
    llm, _ = slow_llm()
    summarizer = Summarizer(policy(), llm)

    results = await asyncio.gather(summarizer.summarize(store), summarizer.summarize(store))

    assert [result is None for result in results] == [False, True]
    assert len(llm.requests) == 1
    assert contents(store)[0] == (0, "Earlier summary: summary")


@pytest.mark.parametrize(
    "reply",
    [
        FakeReply(fail_before=LLMError("provider down", provider="fake")),
        FakeReply(fail_before=RuntimeError("bug in a provider")),
        FakeReply("half a summ", fail_after=1),
        FakeReply("   "),
    ],
    ids=["llm-error", "any-exception", "dropped-mid-stream", "empty"],
)
async def test_llm_failure_leaves_the_conversation_untouched(reply: FakeReply) -> None:
    store = TurnStore("c")
    chat(store, 6)
    before = [(turn.id, turn.seq, turn.version) for turn in store.all()]
    events: list[str] = []
    store.bus.on("*", lambda event, **_: events.append(event))

    assert await Summarizer(policy(), FakeLLM([reply])).summarize(store) is None

    assert [(turn.id, turn.seq, turn.version) for turn in store.all()] == before
    assert events == []


async def test_replacement_emits_deletions_then_the_new_summary() -> None:
    store = TurnStore("c")
    chat(store, 5)
    replaced = [turn.id for turn in store.all()[:3]]
    events: list[tuple[str, str]] = []

    def record(event: str, turn: Turn, **_: Any) -> None:
        events.append((event, turn.id))

    store.bus.on("*", record)

    summary = await Summarizer(policy(), FakeLLM(["summary"])).summarize(store)

    assert summary is not None
    assert events == [
        *(("turn_deleted", turn_id) for turn_id in replaced),
        ("turn_added", summary.id),
        ("summary_created", summary.id),
    ]
