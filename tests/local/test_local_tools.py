"""The local model's tool path without the model: the prompt in Qwen's chat format, the
one-token decision grammar, the output parser and the checks on a chosen call; and the
`LocalLLM` provider over a scripted llama.cpp server, so what it sends is inspected whole."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.local.scripted_engine import ScriptedEngine
from voxline.providers.llm.base import (
    ChatMessage,
    LLMError,
    LLMRequest,
    ToolCallRequest,
    ToolDefinition,
    complete,
)
from voxline.providers.llm.local import CALL_BIAS, LocalLLM
from voxline.providers.llm.local_tools import (
    TOOL_RULES,
    StepParser,
    decision_grammar,
    render_prompt,
    review_call,
)

WEATHER = ToolDefinition(
    "get_weather",
    "Get the weather.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIMER = ToolDefinition(
    "set_timer",
    "Start a timer.",
    {
        "type": "object",
        "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
        "required": ["minutes"],
    },
)
SYSTEM = ChatMessage("system", "Be brief.")


def _call(name: str, **arguments: Any) -> ToolCallRequest:
    return ToolCallRequest(f"c_{name}", name, json.dumps(arguments))


# -- the prompt ------------------------------------------------------------------------------
def test_a_tool_result_is_a_tool_response_after_the_call_never_a_user_turn() -> None:
    messages = [
        SYSTEM,
        ChatMessage("user", "Weather in Rome?"),
        ChatMessage("assistant", tool_calls=[_call("get_weather", city="Rome")]),
        ChatMessage("tool", '{"sky": "clear"}', tool_call_id="c_get_weather", name="get_weather"),
    ]
    prompt = render_prompt(messages, [WEATHER])
    assert prompt.endswith(
        "<|im_start|>user\nWeather in Rome?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"sky": "clear"}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n"
    )
    assert "[result of" not in prompt and prompt.count("<|im_start|>system") == 1


def test_results_of_one_step_share_one_user_role_message() -> None:
    calls = [_call("get_weather", city="Rome"), _call("set_timer", minutes=5)]
    prompt = render_prompt(
        [
            SYSTEM,
            ChatMessage("user", "x"),
            ChatMessage("assistant", "One moment.", tool_calls=calls),
            ChatMessage("tool", "sunny", tool_call_id="a"),
            ChatMessage("tool", "started", tool_call_id="b"),
        ],
        [WEATHER, TIMER],
    )
    assert "<|im_start|>assistant\nOne moment.\n<tool_call>" in prompt
    assert (
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n"
        "<tool_response>\nstarted\n</tool_response><|im_end|>\n"
    ) in prompt


def test_each_step_only_appends_so_the_cached_prefix_stays_valid() -> None:
    """The prompt of the step after a tool result starts with the whole prompt of the step
    before (minus the open assistant header): nothing earlier is edited, the system message
    least of all, and a note or summary added later is rendered where it stands."""
    first = [SYSTEM, ChatMessage("user", "Weather in Rome?")]
    second = [
        *first,
        ChatMessage("assistant", tool_calls=[_call("get_weather", city="Rome")]),
        ChatMessage("tool", "sunny", tool_call_id="c_get_weather"),
        ChatMessage("system", "Summary: the caller is in Rome."),
    ]
    before = render_prompt(first, [WEATHER]).removesuffix("<|im_start|>assistant\n")
    after = render_prompt(second, [WEATHER])
    assert after.startswith(before + "<|im_start|>assistant\n<tool_call>")
    assert after.endswith(
        "<|im_start|>system\nSummary: the caller is in Rome.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_system_message_holds_the_instructions_rules_and_tools_in_qwens_format() -> None:
    prompt = render_prompt([SYSTEM, ChatMessage("user", "hi")], [WEATHER])
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n" + TOOL_RULES + "\n\n# Tools")
    listed = system.split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(listed)["function"]["name"] == "get_weather"
    assert render_prompt([SYSTEM], []) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>assistant\n"
    )


# -- the decision ----------------------------------------------------------------------------
def test_grammar_branches_are_told_apart_by_the_first_token() -> None:
    both = decision_grammar([WEATHER, TIMER], speak=True, call=True)
    assert "start: call | speech" in both
    assert '"<tool_call>\\n" body "\\n</tool_call>" | body' in both
    assert both.count("%json") == 2
    assert "start: speech\n" in decision_grammar([WEATHER], speak=True, call=False)
    assert "start: call\n" in decision_grammar([WEATHER], speak=False, call=True)
    # Nothing to call: speech, whatever was asked.
    assert "start: speech\n" in decision_grammar([], speak=False, call=True)


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_speech_streams_from_the_first_token(step: int) -> None:
    parser = StepParser()
    raw = " Hello there! How can I help?"
    texts = [e.text for i in range(0, len(raw), step) for e in parser.feed(raw[i : i + step])]  # type: ignore[union-attr]
    assert "".join(texts) == "Hello there! How can I help?"
    assert parser.call() is None


@pytest.mark.parametrize(
    "raw",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
    ],
)
def test_a_call_is_never_spoken_and_parses_whole(raw: str) -> None:
    parser = StepParser()
    assert [e for ch in raw for e in parser.feed(ch)] == []
    call = parser.call()
    assert call is not None and call.name == "get_weather"
    assert call.parsed_arguments() == {"city": "Oslo"}


def test_a_cut_off_call_is_an_error_not_text() -> None:
    parser = StepParser()
    parser.feed('{"name": "get_weather", "arguments": {"ci')
    with pytest.raises(LLMError):
        parser.call()


# -- the checks on a chosen call -------------------------------------------------------------
def test_a_required_value_the_caller_never_said_becomes_a_question() -> None:
    messages = [SYSTEM, ChatMessage("user", "What will the weather be like tomorrow?")]
    verdict = review_call(_call("get_weather", city="Paris"), WEATHER, messages)
    assert verdict.call is None and "city" in verdict.note and "Ask them" in verdict.note


@pytest.mark.parametrize("said", ["Hello, how are you?", "What is the capital of France?"])
def test_an_invented_call_on_words_not_about_the_tool_is_simply_answered(said: str) -> None:
    messages = [SYSTEM, ChatMessage("user", said)]
    verdict = review_call(_call("get_weather", city="Paris"), WEATHER, messages)
    assert verdict.call is None and verdict.note == ""  # speak, with nothing to ask


def test_values_the_caller_or_a_result_gave_are_kept_invented_optional_ones_dropped() -> None:
    messages = [
        SYSTEM,
        ChatMessage("user", "Set a timer for ten minutes."),
    ]
    verdict = review_call(_call("set_timer", minutes=10, label="pasta"), TIMER, messages)
    assert verdict.call is not None
    assert verdict.call.parsed_arguments() == {"minutes": 10}
    from_result = [
        SYSTEM,
        ChatMessage("user", "Where does order 5 go, and what's the weather there?"),
        ChatMessage("assistant", tool_calls=[_call("lookup_order", order_id="5")]),
        ChatMessage("tool", '{"city": "Lyon"}', tool_call_id="c_lookup_order"),
    ]
    assert review_call(_call("get_weather", city="Lyon"), WEATHER, from_result).call is not None


@pytest.mark.parametrize(
    ("said", "value", "given"),
    [
        ("Book it for eight tonight.", "20:00", True),
        ("Book it for 7 pm.", "19:00", True),
        ("Book it for tonight.", "20:00", False),
        ("Table at Luigi's please.", "Luigi's", True),
        ("A table please.", "Luigi's", False),
    ],
)
def test_a_value_counts_as_given_when_the_caller_said_it_in_other_words(
    said: str, value: str, given: bool
) -> None:
    book = ToolDefinition(
        "book",
        "Book.",
        {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
    )
    verdict = review_call(_call("book", x=value), book, [SYSTEM, ChatMessage("user", said)])
    assert (verdict.call is not None) is given


def test_after_a_result_a_call_with_invented_values_reports_the_result_instead() -> None:
    messages = [
        SYSTEM,
        ChatMessage("user", "Weather in Rome?"),
        ChatMessage("assistant", tool_calls=[_call("get_weather", city="Rome")]),
        ChatMessage("tool", "sunny", tool_call_id="c_get_weather"),
    ]
    verdict = review_call(_call("set_timer", minutes=10), TIMER, messages)
    assert verdict.call is None and "results above" in verdict.note and "Ask" not in verdict.note


def test_the_same_call_twice_in_one_turn_is_answered_instead() -> None:
    messages = [
        SYSTEM,
        ChatMessage("user", "Weather in Rome?"),
        ChatMessage("assistant", tool_calls=[_call("get_weather", city="Rome")]),
        ChatMessage("tool", "sunny", tool_call_id="c_get_weather"),
    ]
    verdict = review_call(_call("get_weather", city="Rome"), WEATHER, messages)
    assert verdict.call is None and "already called" in verdict.note
    # In a later turn the same question is a fresh call.
    later = [*messages, ChatMessage("assistant", "Sunny."), ChatMessage("user", "Rome again?")]
    assert review_call(_call("get_weather", city="Rome"), WEATHER, later).call is not None


# -- the provider over a scripted llama.cpp server -------------------------------------------
def _local(outputs: list[list[str]]) -> tuple[LocalLLM, ScriptedEngine]:
    engine = ScriptedEngine(outputs)
    return LocalLLM(engine, "local:scripted"), engine  # type: ignore[arg-type]


async def test_small_talk_is_spoken_with_the_decision_grammar_and_no_call() -> None:
    llm, engine = _local([["Hi", "! Doing", " well."]])
    result = await complete(
        llm, LLMRequest([SYSTEM, ChatMessage("user", "Hello!")], tools=[WEATHER])
    )
    assert result.text == "Hi! Doing well." and result.tool_calls == []
    [body] = engine.bodies
    assert "start: call | speech" in body["grammar"]
    assert body["prompt"].endswith("<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n")
    # Only a call's first tokens are biased; speech can never contain "{".
    assert body["logit_bias"] == [["{", CALL_BIAS], ['{"', CALL_BIAS]]


async def test_an_invented_argument_is_replaced_by_a_question_on_the_same_prefix() -> None:
    llm, engine = _local(
        [
            ['{"name": "get_weather", ', '"arguments": {"city": "Paris"}}'],
            ["Which city", " do you mean?"],
        ]
    )
    request = LLMRequest([SYSTEM, ChatMessage("user", "What's the weather like?")], [WEATHER])
    result = await complete(llm, request)
    assert result.tool_calls == [] and result.text == "Which city do you mean?"
    first, second = engine.bodies
    assert second["prompt"].startswith(first["prompt"].removesuffix("<|im_start|>assistant\n"))
    assert "<|im_start|>system\nThe user has not said the city" in second["prompt"]
    assert "start: speech\n" in second["grammar"]


async def test_tool_choice_none_keeps_the_tools_listed_and_only_allows_speech() -> None:
    llm, engine = _local([["Done."]])
    request = LLMRequest([SYSTEM, ChatMessage("user", "x")], tools=[WEATHER], tool_choice="none")
    await complete(llm, request)
    [body] = engine.bodies
    assert "<tools>" in body["prompt"] and "start: speech\n" in body["grammar"]
    assert "logit_bias" not in body


async def test_without_tools_the_text_passes_through_unconstrained() -> None:
    llm, engine = _local([["{not", " a call}"]])
    result = await complete(llm, LLMRequest([SYSTEM, ChatMessage("user", "x")]))
    assert result.text == "{not a call}" and "grammar" not in engine.bodies[0]


async def test_warming_evaluates_the_system_prefix_and_parses_nothing() -> None:
    llm, engine = _local([['{"']])  # a call's first token must not be taken for a cut-off call
    await llm.warm(LLMRequest([SYSTEM, ChatMessage("user", "ignored")], tools=[WEATHER]))
    [body] = engine.bodies
    assert body["n_predict"] == 1 and "grammar" not in body
    real = render_prompt([SYSTEM, ChatMessage("user", "Hi")], [WEATHER])
    assert real.startswith(body["prompt"].removesuffix("<|im_start|>assistant\n"))
