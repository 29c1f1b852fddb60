"""OpenAICompatibleLLM when a server's model writes its tool calls as text (fenced or bare JSON)
instead of structured `tool_calls`: known tools become calls, anything else stays prose."""

from __future__ import annotations

import pytest

from tests.providers.chat_server import (
    SSE,
    ChatServer,
    chunk,
    text_reply,
)
from tests.providers.compat_requests import (
    ask,
    call_delta,
    calls_of,
    events_of,
    tool_request,
)
from voxline.providers.llm.base import (
    TextDelta,
    ToolCallRequest,
    complete,
)
from voxline.providers.llm.openai_compat import OpenAICompatibleLLM

# --- tool calls written as text ---------------------------------------------------------------


def content_stream(*pieces: str) -> SSE:
    return text_reply(*pieces, usage=None)


@pytest.mark.parametrize(
    "pieces",
    [
        ["```", "json\n", '{"name": "get_hours", ', '"arguments": {"day": "sat"}}', "\n```"],
        ["  {", '"name": "get_hours", "arguments": "{\\"day\\": \\"sat\\"}"', "}"],
        ['[{"name": "get_hours", "parameters": {"day": "sat"}}]'],
    ],
    ids=["fenced", "bare-string-arguments", "list-with-parameters"],
)
async def test_tool_call_written_as_text_becomes_a_call(
    server: ChatServer, llm: OpenAICompatibleLLM, pieces: list[str]
) -> None:
    server.add(content_stream(*pieces))

    events = await events_of(llm, tool_request())

    assert not any(isinstance(e, TextDelta) for e in events)
    [call] = calls_of(events)
    assert (call.name, call.parsed_arguments()) == ("get_hours", {"day": "sat"})
    assert call.id.startswith("call_")


async def test_prose_after_a_text_tool_call_is_kept(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    server.add(content_stream('```json\n{"name": "get_hours", "arguments": {}}\n```', "\nOne sec."))

    result = await complete(llm, tool_request())

    assert result.text.strip() == "One sec."
    assert [c.name for c in result.tool_calls] == ["get_hours"]


async def test_prose_streams_without_waiting_for_the_end(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    server.add(content_stream("``", "`python\nprint(1)\n```", " done"))
    stream = llm.stream(tool_request())

    assert await anext(stream) == TextDelta("```python\nprint(1)\n```")
    assert [e async for e in stream] == [TextDelta(" done")]


@pytest.mark.parametrize(
    "text",
    ['{"name": "delete_everything", "arguments": {}}', '{"answer": 42}', "{not json at all"],
)
async def test_json_that_is_no_known_tool_call_stays_text(
    server: ChatServer, llm: OpenAICompatibleLLM, text: str
) -> None:
    server.add(content_stream(text[:5], text[5:]))

    result = await complete(llm, tool_request())

    assert (result.text, result.tool_calls) == (text, [])


async def test_text_tool_calls_are_not_parsed_without_tools(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    text = '{"name": "get_hours", "arguments": {}}'
    server.add(content_stream(text))
    assert (await complete(llm, ask())).text == text


async def test_text_tool_call_parsing_can_be_turned_off(server: ChatServer) -> None:
    text = '{"name": "get_hours", "arguments": {}}'
    server.add(content_stream(text))
    model = OpenAICompatibleLLM(
        "m", base_url=server.base_url, max_retries=0, parse_text_tool_calls=False
    )

    result = await complete(model, tool_request())

    assert (result.text, result.tool_calls) == (text, [])
    await model.aclose()


async def test_structured_calls_win_over_json_text(
    server: ChatServer, llm: OpenAICompatibleLLM
) -> None:
    """A server that sends both must not produce the call twice, nor speak the JSON."""
    server.add(
        SSE(
            [
                chunk({"role": "assistant", "content": '{"name": "get_hours", "arguments": {}}'}),
                chunk(call_delta(index=0, id="call_s", function={"name": "get_hours"})),
                chunk(finish_reason="tool_calls"),
                "[DONE]",
            ]
        )
    )

    result = await complete(llm, tool_request())

    assert result.text == ""
    assert result.tool_calls == [ToolCallRequest(id="call_s", name="get_hours", arguments="{}")]
