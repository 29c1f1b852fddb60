"""The local model's tool path without the model: the prompt in Qwen's chat format, the
grammars of a call's constrained steps, the output parser and the checks on a chosen call.
The provider's steps over a scripted llama.cpp server are in `test_local_tool_steps.py`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from voxline.providers.llm.base import (
    ChatMessage,
    TextDelta,
    ToolCallRequest,
    ToolDefinition,
)
from voxline.providers.llm.local_tools import (
    CALL_OPENING,
    TOOL_RULES,
    StepParser,
    about_caller,
    arguments_grammar,
    arguments_opening,
    may_hold_value,
    name_grammar,
    parse_arguments,
    render_prompt,
    review_call,
    runaway,
    speech_grammar,
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


# -- the steps' grammars and the parser ------------------------------------------------------
def test_a_call_is_written_in_the_templates_format_after_the_prompt() -> None:
    """What a call's steps append is what `render_prompt` later shows for the call, so the
    next step's prompt extends the call's prompt."""
    call = _call("get_weather", city="Oslo")
    after = render_prompt(
        [SYSTEM, ChatMessage("user", "x"), ChatMessage("assistant", tool_calls=[call])], [WEATHER]
    )
    before = render_prompt([SYSTEM, ChatMessage("user", "x")], [WEATHER])
    assert after.startswith(before + arguments_opening("get_weather") + '{"city": "Oslo"}}')
    assert arguments_opening("get_weather").startswith(CALL_OPENING)


def test_each_constrained_step_admits_only_its_part() -> None:
    assert name_grammar([WEATHER, TIMER]).endswith('start: "get_weather\\"" | "set_timer\\""\n')
    schema = json.dumps(TIMER.parameters)
    assert arguments_grammar(TIMER).endswith(f"start: args\nargs: %json {schema}\n")
    assert "start: speech\n" in speech_grammar() and "%json" not in speech_grammar()


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_speech_streams_from_the_first_token(step: int) -> None:
    parser = StepParser()
    raw = " Hello there! How can I help?"
    texts = [e.text for i in range(0, len(raw), step) for e in parser.feed(raw[i : i + step])]  # type: ignore[union-attr]
    assert "".join(texts) == "Hello there! How can I help?"
    assert parser.kind == "speech" and not parser.done


@pytest.mark.parametrize("opening", ["<tool_call>", "{", '{"', "\n<", " {"])
def test_a_call_opening_ends_the_step_and_is_never_spoken(opening: str) -> None:
    parser = StepParser()
    assert parser.feed(opening) == [] and parser.kind == "call" and parser.done
    assert parser.feed('"name": "x"}') == []


@pytest.mark.parametrize(
    ("chunks", "spoken"),
    [
        (["Let me check. ", "<tool_call>\n{"], "Let me check."),
        (["Sure", ", here: {", '"a": 1}'], "Sure, here:"),
        (["Run `ls`", " now"], "Run"),
    ],
)
def test_markup_later_in_speech_ends_the_step_unspoken(chunks: list[str], spoken: str) -> None:
    parser = StepParser()
    events = [e for chunk in chunks for e in parser.feed(chunk)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).rstrip() == spoken
    assert parser.done and parser.kind == "speech"


def test_without_tools_text_passes_through_untouched() -> None:
    parser = StepParser(speech_only=True)
    assert parser.feed("{not") == [TextDelta("{not")] and not parser.done


@pytest.mark.parametrize(
    ("raw", "stop"),
    [
        ('{"order_id": "12345678901', False),
        ('{"order_id": "123456789012', True),
        ('{"minutes": 100000000000', True),
        ('{"time": "' + "very " * 13, True),
        ('{"time": "tonight at eight", "restaurant": "The Ivy"}', False),
    ],
)
def test_a_value_running_on_without_end_is_seen_early(raw: str, stop: bool) -> None:
    assert runaway(raw) is stop


def test_cut_off_arguments_are_no_arguments() -> None:
    assert parse_arguments('{"city": "Oslo"}') == {"city": "Oslo"}
    for raw in ['{"order_id": "1234567890123456789', "[1]", ""]:
        assert parse_arguments(raw) is None


@pytest.mark.parametrize(
    ("said", "holds"),
    [
        ("Hello, how are you?", False),
        ("Thanks, I'm done. I think that's all.", False),
        ("Do I need a coat in Oslo?", True),
        ("What is the capital of France?", True),
        ("Set a timer for ten minutes.", True),
        ("Where is order 777?", True),
        ("Paris is lovely.", False),  # a sentence's first word is capitalised anyway
    ],
)
def test_words_may_hold_a_value_when_they_hold_a_number_or_a_name(said: str, holds: bool) -> None:
    assert may_hold_value([SYSTEM, ChatMessage("user", said)]) is holds


# -- the checks on a chosen call -------------------------------------------------------------
@pytest.mark.parametrize("arguments", [{"city": "Paris"}, {}])
def test_a_required_value_the_caller_never_said_becomes_a_question(
    arguments: dict[str, str],
) -> None:
    messages = [SYSTEM, ChatMessage("user", "What will the weather be like tomorrow?")]
    verdict = review_call(_call("get_weather", **arguments), WEATHER, messages)
    assert verdict.call is None and "city" in verdict.note and "Ask them" in verdict.note


def test_words_are_about_a_tool_by_what_they_ask_not_when() -> None:
    forecast = ToolDefinition("get_weather", "Get today's weather forecast for a city.", {})
    assert about_caller(forecast, [ChatMessage("user", "What's the forecast for Rome?")])
    assert not about_caller(forecast, [ChatMessage("user", "It's a nice day today.")])


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
