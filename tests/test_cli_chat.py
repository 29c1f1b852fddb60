"""`voxline chat` as a user runs it: a real process, stdin and stdout, against a loopback
OpenAI-compatible server streaming real Chat Completions chunk sequences (quirks included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.providers.chat_server import SSE, ChatServer, chunk, text_reply, usage_chunk

ROOT = Path(__file__).resolve().parents[1]


def tool_call_quirky(name: str, args: dict[str, Any]) -> SSE:
    """A call whose deltas carry no `index`, ends with finish_reason "stop" (OpenAI's own
    behaviour for forced tool choice), and delivers its arguments in two fragments."""
    text = json.dumps(args)
    half = len(text) // 2
    return SSE(
        [
            chunk(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "w1",
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ],
                }
            ),
            chunk({"tool_calls": [{"id": "w1", "function": {"arguments": text[:half]}}]}),
            chunk({"tool_calls": [{"function": {"arguments": text[half:]}}]}),
            chunk({}, finish_reason="stop"),
            usage_chunk(40, 12),
            "[DONE]",
        ]
    )


def tool_call_as_object(name: str, args: dict[str, Any]) -> SSE:
    """The whole call in one chunk, arguments as a JSON object, a new chunk id each time."""
    return SSE(
        [
            chunk(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "x9",
                            "type": "function",
                            "function": {"name": name, "arguments": args},
                        }
                    ],
                },
                chunk_id="a",
            ),
            chunk({}, finish_reason="tool_calls", chunk_id="b"),
            "[DONE]",
        ]
    )


def run_chat(server: ChatServer, tmp_path: Path, lines: list[str], *extra: str) -> str:
    agent = tmp_path / "agent.json"
    agent.write_text(
        json.dumps(
            {
                "name": "weather",
                "instructions": "You tell the weather.",
                "greeting": "Weather desk, hello!",
                "tools": ["get_weather"],
            }
        )
    )
    env = {
        **os.environ,
        "VOXLINE_DATA_DIR": str(tmp_path / "data"),
        "VOXLINE_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxline.cli",
            "chat",
            "--agent",
            str(agent),
            "--llm",
            f"openai-compatible:{server.base_url}#test-model",
            "--import",
            "tests.weather_tool",
            *extra,
        ],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_multi_turn_chat_with_tools_against_an_openai_compatible_server(tmp_path: Path) -> None:
    replies = [
        tool_call_quirky("get_weather", {"city": "Paris", "day": "tomorrow"}),
        text_reply("Tomorrow in Paris: ", "sunny, 22 degrees."),
        tool_call_as_object("get_weather", {"city": "Rome", "day": "today"}),
        text_reply("Rome is sunny too."),
    ]
    with ChatServer(replies) as server:
        out = run_chat(
            server, tmp_path, ["What's the weather in Paris tomorrow?", "And Rome today?", "/quit"]
        )
        bodies = [r.body for r in server.requests]

    assert "agent> Weather desk, hello!" in out
    assert '[tool] get_weather({"city": "Paris", "day": "tomorrow"})' in out
    assert "agent> Tomorrow in Paris: sunny, 22 degrees." in out
    assert "agent> Rome is sunny too." in out
    assert len(bodies) == 4
    assert all(b["stream"] is True and b["model"] == "test-model" for b in bodies)
    assert bodies[0]["tools"][0]["function"]["name"] == "get_weather"
    second = bodies[1]["messages"]
    assert second[-2]["role"] == "assistant"
    assert second[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(second[-2]["tool_calls"][0]["function"]["arguments"]) == {
        "city": "Paris",
        "day": "tomorrow",
    }
    assert second[-1]["role"] == "tool"
    assert "Paris" in second[-1]["content"] and second[-1]["tool_call_id"] == "w1"
    fourth = bodies[3]["messages"]
    assert [m["role"] for m in fourth] == [
        "system",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
        "tool",
    ]
    assert "Rome" in fourth[-1]["content"]


def test_a_conversation_resumes_with_its_history(tmp_path: Path) -> None:
    with ChatServer([text_reply("Nice to meet you, Ada.")]) as server:
        out = run_chat(server, tmp_path, ["I am Ada.", "/quit"])
    conversation = out.split("(conversation ")[1].split(";")[0]

    with ChatServer([text_reply("You are Ada.")]) as server:
        out = run_chat(server, tmp_path, ["Who am I?", "/quit"], "--session", conversation)
        messages = server.requests[0].body["messages"]
    assert "Weather desk, hello!" not in out  # resumed conversations are not greeted again
    assert "agent> You are Ada." in out
    assert [m.get("content") for m in messages[1:]] == [
        "Weather desk, hello!",
        "I am Ada.",
        "Nice to meet you, Ada.",
        "Who am I?",
    ]


def test_missing_agent_file_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voxline.cli", "chat", "--agent", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
        input="",
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: agent file not found")
    assert "Traceback" not in result.stderr
