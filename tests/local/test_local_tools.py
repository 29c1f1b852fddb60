"""The JSON reply protocol of the local LLM, without the model: parsing, schema, history."""

import json

import pytest

from voxline.providers.llm.base import (
    ChatMessage,
    LLMError,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
    ToolDefinition,
)
from voxline.providers.llm.local_tools import (
    ReplyParser,
    chat_messages,
    output_schema,
    tool_instructions,
)

WEATHER = ToolDefinition(
    "get_weather",
    "Get the weather.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIMER = ToolDefinition("set_timer", "Start a timer.", {"type": "object", "properties": {}})


def run(raw: str, step: int = 1) -> tuple[list[LLMEvent], list[list[LLMEvent]]]:
    parser = ReplyParser([WEATHER, TIMER])
    per_feed = [parser.feed(raw[i : i + step]) for i in range(0, len(raw), step)]
    events = [event for batch in per_feed for event in batch] + parser.finish()
    return events, per_feed


def text_of(events: list[LLMEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_reply_text_streams_out_of_the_json_string(step: int) -> None:
    raw = (
        '{"wants": "a \\"fact\\"", "tool": "none", '
        '"reply": "Paris \\u00e9t\\u00e9 \\ud83d\\ude00\\n ok"}'
    )
    events, per_feed = run(raw, step)
    assert text_of(events) == "Paris été 😀\n ok"
    assert not any(isinstance(e, ToolCallDelta) for e in events)
    if step == 1:  # text arrives while the JSON is still being generated
        first = next(i for i, batch in enumerate(per_feed) if batch)
        assert first < len(raw) - 10


def test_tool_choice_becomes_a_call_and_no_text() -> None:
    raw = '{"wants": "weather", "tool": "get_weather", "arguments": {"city": "Paris"}}'
    events, _ = run(raw)
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(c.index, c.name, json.loads(c.arguments)) for c in calls] == [
        (0, "get_weather", {"city": "Paris"})
    ]
    assert calls[0].id and text_of(events) == ""


def test_cut_off_tool_call_is_an_error_not_text() -> None:
    with pytest.raises(LLMError):
        run('{"wants": "weather", "tool": "get_weather", "arguments": {"ci')


def test_fenced_json_in_a_reply_becomes_a_call_and_is_never_spoken() -> None:
    block = '```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```'
    raw = json.dumps({"wants": "x", "tool": "none", "reply": f"Let me check. {block}"})
    events, _ = run(raw, step=2)
    assert text_of(events).strip() == "Let me check."
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [c.name for c in calls] == ["get_weather"]


def test_fenced_block_that_is_not_a_call_is_dropped() -> None:
    raw = json.dumps({"wants": "x", "tool": "none", "reply": 'Here ```json\n{"a": 1}\n``` done'})
    events, _ = run(raw)
    assert text_of(events) == "Here done"
    assert "{" not in text_of(events)


def test_output_that_ignores_the_format_still_hides_json() -> None:
    raw = 'Sure.\n```json\n{"tool": "set_timer", "arguments": {}}\n```'
    events, _ = run(raw)
    assert text_of(events).strip() == "Sure."
    assert [e.name for e in events if isinstance(e, ToolCallDelta)] == ["set_timer"]


def test_schema_offers_none_and_each_tool_with_its_arguments() -> None:
    schema = output_schema([WEATHER, TIMER])
    tools = [shape["properties"]["tool"]["const"] for shape in schema["oneOf"]]
    assert tools == ["none", "get_weather", "set_timer"]
    assert schema["oneOf"][1]["properties"]["arguments"] == WEATHER.parameters
    forced = output_schema([WEATHER], allow_reply=False)
    assert forced["properties"]["tool"] == {"const": "get_weather"}


def test_history_shows_calls_in_the_reply_format_and_merges_system() -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Weather in Rome?"),
        ChatMessage(
            "assistant",
            tool_calls=[ToolCallRequest("c1", "get_weather", '{"city": "Rome"}')],
        ),
        ChatMessage("tool", '{"sky": "clear"}', tool_call_id="c1", name="get_weather"),
        ChatMessage("system", "Summary: none."),
    ]
    rendered = chat_messages(messages, tool_instructions([WEATHER]))
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert rendered[0]["content"].startswith("Be brief.\n\nSummary: none.")
    assert "get_weather" in rendered[0]["content"]
    assert json.loads(rendered[2]["content"])["arguments"] == {"city": "Rome"}
    assert rendered[3]["content"] == '[result of get_weather]: {"sky": "clear"}'
