"""The `LocalLLM` provider's steps with tools over a scripted llama.cpp server: what each step
sends (prompt, grammar, bias) and the events it yields, for speech, a call, and the calls the
checks stop before or after their arguments."""

from __future__ import annotations

import json

import pytest

from tests.local.scripted_engine import ScriptedEngine
from tests.local.test_local_tools import WEATHER
from voxline.providers.llm.base import (
    ChatMessage,
    LLMEvent,
    LLMRequest,
    TextDelta,
    ToolCallAccumulator,
    ToolCallDelta,
    ToolCallRequest,
    ToolDefinition,
    Usage,
    complete,
)
from voxline.providers.llm.local import ANSWERED_NOTE, ARGUMENT_TOKENS, CALL_BIAS, LocalLLM
from voxline.providers.llm.local_tools import CALL_OPENING, arguments_opening, render_prompt

TIMER = ToolDefinition(
    "set_timer",
    "Start a timer.",
    {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]},
)
SYSTEM = ChatMessage("system", "Be brief.")


def _local(outputs: list[list[str]]) -> tuple[LocalLLM, ScriptedEngine]:
    engine = ScriptedEngine(outputs)
    return LocalLLM(engine, "local:scripted"), engine  # type: ignore[arg-type]


def _ask(said: str, tools: list[ToolDefinition], **kwargs: object) -> LLMRequest:
    return LLMRequest([SYSTEM, ChatMessage("user", said)], tools, **kwargs)  # type: ignore[arg-type]


async def _events(llm: LocalLLM, request: LLMRequest) -> list[LLMEvent]:
    return [event async for event in llm.stream(request) if not isinstance(event, Usage)]


def answered(said: str, city: str, result: str) -> list[ChatMessage]:
    """The caller asked `said`, and the weather for `city` has come back as `result`."""
    call = ToolCallRequest("c1", "get_weather", json.dumps({"city": city}))
    return [
        SYSTEM,
        ChatMessage("user", said),
        ChatMessage("assistant", tool_calls=[call]),
        ChatMessage("tool", result, tool_call_id="c1"),
    ]


async def test_speech_is_decoded_without_a_grammar_with_the_bias_on_a_call() -> None:
    llm, engine = _local([["Hi", "! Doing", " well."]])
    result = await complete(llm, _ask("Hello!", [WEATHER]))
    assert result.text == "Hi! Doing well." and result.tool_calls == []
    [body] = engine.bodies
    assert "grammar" not in body and body["temperature"] == 0.0
    assert body["prompt"].endswith("<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n")
    assert body["logit_bias"] == [["{", CALL_BIAS], ['{"', CALL_BIAS]]


async def test_markup_after_speech_is_cut_and_no_call_follows() -> None:
    llm, engine = _local([["Sure.", "\n<tool_call>", '\n{"name": "get_weather"']])
    result = await complete(llm, _ask("Weather in Oslo?", [WEATHER]))
    assert result.text.strip() == "Sure." and result.tool_calls == []
    assert len(engine.bodies) == 1


async def test_a_call_is_named_before_its_arguments_are_written_on_the_same_prompt() -> None:
    llm, engine = _local([['{"', 'name": "get_weather"'], ['{"city": ', '"Oslo"}']])
    events = await _events(llm, _ask("What's the weather in Oslo?", [WEATHER]))
    named, arguments = events
    assert isinstance(named, ToolCallDelta) and isinstance(arguments, ToolCallDelta)
    assert named.name == "get_weather" and named.id and named.arguments == ""
    assert arguments.name is None and arguments.arguments == '{"city": "Oslo"}'
    first, second = engine.bodies
    # One tool: no step to choose the name; the arguments are written right after the
    # canonical opening, so the cached prompt only grows.
    assert second["prompt"] == first["prompt"] + arguments_opening("get_weather")
    assert "%json" in second["grammar"] and "logit_bias" not in second
    calls = ToolCallAccumulator()
    for event in events:
        calls.add(event)  # type: ignore[arg-type]
    assert calls.calls() == [ToolCallRequest(named.id, "get_weather", '{"city": "Oslo"}')]


async def test_with_several_tools_a_short_step_chooses_the_name() -> None:
    llm, engine = _local([["<tool_call>"], ['set_timer"'], ['{"minutes": 10}']])
    result = await complete(llm, _ask("Set a timer for 10 minutes.", [WEATHER, TIMER]))
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("set_timer", '{"minutes": 10}')]
    first, name, arguments = engine.bodies
    assert name["prompt"] == first["prompt"] + CALL_OPENING
    assert name["grammar"].endswith('start: "get_weather\\"" | "set_timer\\""\n')
    assert arguments["prompt"] == first["prompt"] + arguments_opening("set_timer")


async def test_an_invented_value_withdraws_the_named_call_and_asks_for_it() -> None:
    llm, engine = _local([['{"'], ['{"city": "Paris"}'], ["Which city", " do you mean?"]])
    request = _ask("What's the weather like?", [WEATHER])
    events = await _events(llm, request)
    assert [type(e) for e in events] == [ToolCallDelta, ToolCallDelta, TextDelta, TextDelta]
    assert events[0].name == "get_weather"  # type: ignore[union-attr]
    assert events[1] == ToolCallDelta(index=0, withdrawn=True)
    # What a consumer accumulating the deltas is left with: no call at all.
    llm, engine = _local([['{"'], ['{"city": "Paris"}'], ["Which city", " do you mean?"]])
    result = await complete(llm, request)
    assert result.tool_calls == [] and result.text == "Which city do you mean?"
    first, _, speech = engine.bodies
    assert speech["prompt"].startswith(first["prompt"].removesuffix("<|im_start|>assistant\n"))
    assert "<|im_start|>system\nThe user has not said the city" in speech["prompt"]
    assert "start: speech\n" in speech["grammar"]


async def test_a_call_on_words_not_about_it_and_holding_no_value_is_never_written() -> None:
    llm, engine = _local([['{"'], ["I'm well", ", thanks!"]])
    events = await _events(llm, _ask("Hello, how are you?", [WEATHER]))
    assert events == [TextDelta("I'm well"), TextDelta(", thanks!")]
    first, speech = engine.bodies
    assert speech["prompt"] == first["prompt"]  # no note: the model simply speaks
    assert "start: speech\n" in speech["grammar"] and "logit_bias" not in speech


async def test_a_call_not_about_the_words_is_checked_silently_when_they_may_hold_values() -> None:
    """ "Do I need a coat in Oslo?" shares no word with the weather tool but holds its city:
    the arguments are written without announcing the call, which is made when its values were
    said, and replaced by the answer when they were invented."""
    llm, _ = _local([['{"'], ['{"city": "Oslo"}']])
    events = await _events(llm, _ask("Do I need a coat in Oslo?", [WEATHER]))
    [call] = events
    assert isinstance(call, ToolCallDelta) and call.name == "get_weather" and call.id
    assert call.arguments == '{"city": "Oslo"}'
    llm, engine = _local([['{"'], ['{"city": "Paris"}'], ["Paris."]])
    events = await _events(llm, _ask("What is the capital of France?", [WEATHER]))
    assert events == [TextDelta("Paris.")]
    assert engine.bodies[2]["prompt"] == engine.bodies[0]["prompt"]


async def test_after_a_result_a_call_on_another_topic_reports_the_result_unwritten() -> None:
    llm, engine = _local([['{"'], ['set_timer"'], ["It is sunny."]])
    messages = [
        SYSTEM,
        ChatMessage("user", "Weather in Rome?"),
        ChatMessage("assistant", tool_calls=[ToolCallRequest("c1", "get_weather", "{}")]),
        ChatMessage("tool", "sunny", tool_call_id="c1"),
    ]
    result = await complete(llm, LLMRequest(messages, [WEATHER, TIMER]))
    assert result.tool_calls == [] and result.text == "It is sunny."
    _, name, speech = engine.bodies
    assert name["prompt"].endswith(CALL_OPENING)  # chose set_timer: not what was asked about
    assert "set_timer is not needed" in speech["prompt"] and "%json" not in speech["grammar"]


async def test_tool_choice_none_keeps_the_tools_listed_and_only_allows_speech() -> None:
    llm, engine = _local([["Done."]])
    await complete(llm, _ask("x", [WEATHER], tool_choice="none"))
    [body] = engine.bodies
    assert "<tools>" in body["prompt"] and "start: speech\n" in body["grammar"]
    assert "logit_bias" not in body


@pytest.mark.parametrize("choice", ["required", "get_weather"])
async def test_a_required_or_named_tool_goes_straight_to_its_call(choice: str) -> None:
    llm, engine = _local([['{"city": "Oslo"}']])
    events = await _events(llm, _ask("Oslo?", [WEATHER], tool_choice=choice))
    assert [e.name for e in events if isinstance(e, ToolCallDelta)] == ["get_weather", None]
    [body] = engine.bodies
    assert body["prompt"].endswith(arguments_opening("get_weather"))


async def test_arguments_cut_off_at_the_cap_are_taken_as_invented() -> None:
    """A model with no value to write runs on ("1234567890…") until the token cap: the call
    is withdrawn and the caller asked for the value, never an error or a half call."""
    llm, engine = _local([['{"'], ['{"city": "12345678901234567890'], ["Which city?"]])
    result = await complete(llm, _ask("What's the weather?", [WEATHER]))
    assert result.tool_calls == [] and result.text == "Which city?"
    assert engine.bodies[1]["n_predict"] == ARGUMENT_TOKENS
    assert "The user has not said the city" in engine.bodies[2]["prompt"]


async def test_without_tools_the_text_passes_through_unconstrained() -> None:
    llm, engine = _local([["{not", " a call}"]])
    result = await complete(llm, LLMRequest([SYSTEM, ChatMessage("user", "x")]))
    assert result.text == "{not a call}" and "grammar" not in engine.bodies[0]


async def test_warming_evaluates_the_system_prefix_and_the_grammar_engine() -> None:
    llm, engine = _local([['{"']])  # a call's first token must not be taken for a cut-off call
    await llm.warm(LLMRequest([SYSTEM, ChatMessage("user", "ignored")], tools=[WEATHER]))
    [body] = engine.bodies
    assert body["n_predict"] == 1 and "start: speech" in body["grammar"]
    real = render_prompt([SYSTEM, ChatMessage("user", "Hi")], [WEATHER])
    assert real.startswith(body["prompt"].removesuffix("<|im_start|>assistant\n"))


async def test_a_call_after_a_result_this_turn_comes_whole_never_named_first() -> None:
    """Only the turn's first call is announced early (that is when a filler is said); a later
    one that the review could still stop comes as one complete delta or not at all."""
    llm, _ = _local([['{"'], ['{"city": "Oslo"}']])
    messages = answered("What's the weather in Rome and in Oslo?", "Rome", "sunny")
    events = await _events(llm, LLMRequest(messages, [WEATHER]))
    [call] = events
    assert isinstance(call, ToolCallDelta) and call.id and call.name == "get_weather"
    assert call.arguments == '{"city": "Oslo"}'
    llm, _ = _local([['{"'], ['{"city": "Rome"}'], ["Rome is sunny."]])  # a repeat: stopped
    events = await _events(llm, LLMRequest(messages, [WEATHER]))
    assert events == [TextDelta("Rome is sunny.")]


async def test_the_same_tool_again_with_no_new_value_is_never_written() -> None:
    """After its result, a call of the same tool whose every value the caller said is already
    in the earlier call could only repeat it: the model speaks the result instead, without
    writing arguments the review would refuse (another tool, not called yet, keeps the step
    open to calls)."""
    llm, engine = _local([['{"'], ['get_weather"'], ["Paris will be sunny."]])
    messages = answered("What's the weather in Paris tomorrow?", "Paris", "Paris tomorrow: sunny")
    events = await _events(llm, LLMRequest(messages, [WEATHER, TIMER]))
    assert events == [TextDelta("Paris will be sunny.")]
    decision, _, speech = engine.bodies  # the decision, the name, then speech: no arguments
    assert decision["logit_bias"] == [["{", CALL_BIAS], ['{"', CALL_BIAS]]
    assert "get_weather already answered" in speech["prompt"]
    cached = render_prompt(messages, [WEATHER, TIMER]).removesuffix("<|im_start|>assistant\n")
    assert speech["prompt"].startswith(cached)  # the note only follows the cached prefix


async def test_once_every_tool_answered_all_the_caller_asked_the_step_is_the_answer() -> None:
    llm, engine = _local([["Paris will be sunny."]])
    messages = answered("What's the weather in Paris tomorrow?", "Paris", "Paris tomorrow: sunny")
    events = await _events(llm, LLMRequest(messages, [WEATHER]))
    assert events == [TextDelta("Paris will be sunny.")]
    [step] = engine.bodies  # no biased step that could only open a repeat
    assert "logit_bias" not in step and ANSWERED_NOTE in step["prompt"]
    asked_more = [*messages[:1], ChatMessage("user", "Weather in Paris and Oslo?"), *messages[2:]]
    llm, engine = _local([["Oslo?"]])
    await _events(llm, LLMRequest(asked_more, [WEATHER]))  # Oslo not asked yet: calls allowed
    assert engine.bodies[0]["logit_bias"] == [["{", CALL_BIAS], ['{"', CALL_BIAS]]
