"""The Realtime provider and engine fed a recorded GA event sequence, over a real socket.

The fake server does not improvise here: each test sends, event by event, what a GA server
sends (protocols.md §4.5: deltas of audio and transcript interleaved, the caller's transcript
arriving in the middle of the answer, a `response.done` with status `incomplete`, an `error`,
a function call, a socket that dies mid-answer), and checks what the engine made of it: the
turn store, the audio handed to the channel, what went back to the server, and the reconnect
that restores the session and re-seeds the conversation.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.providers.realtime_server import Connection, FakeRealtimeServer
from voxline import Agent
from voxline.conversation.session import Session
from voxline.conversation.turns import BotTurn, ToolCallTurn, ToolResultTurn, UserTurn
from voxline.providers.llm.registry import create_llm
from voxline.providers.realtime.config import PCM24
from voxline.providers.realtime.history import heard_text
from voxline.settings import Settings
from voxline.store.sql import SqlStore
from voxline.tools.decorator import FunctionTool
from voxline.voice.realtime import RealtimeVoiceEngine

MODEL = "gpt-realtime"


def lookup_order(order_id: str) -> str:
    """Look up where an order is.

    Args:
        order_id: The order number.
    """
    return f"order {order_id} shipped yesterday"


@dataclass
class Out:
    """The channel: plays at once, or holds `played` bytes as heard when `playing`."""

    audio: bytearray = field(default_factory=bytearray)
    timeline: list[str] = field(default_factory=list)
    cleared: int = 0
    playing: bool = False
    played: dict[str, int] = field(default_factory=dict)

    def play(self, item_id: str, audio: bytes) -> None:
        self.audio.extend(audio)
        self.timeline.append("audio")

    def clear(self) -> None:
        self.cleared += 1
        self.playing = False

    def played_bytes(self, item_id: str) -> int:
        return self.played.get(item_id, 0)


@dataclass
class Call:
    server: FakeRealtimeServer
    session: Session
    engine: RealtimeVoiceEngine
    out: Out
    events: list[tuple[str, dict[str, Any]]]

    async def conn(self, index: int = 0) -> Connection:
        conn = await self.server.connection(index)
        await eventually(lambda: bool(conn.of("session.update")))
        return conn

    def bots(self) -> list[BotTurn]:
        return [t for t in self.session.turns if isinstance(t, BotTurn)]

    def emitted(self, name: str) -> list[dict[str, Any]]:
        return [payload for event, payload in self.events if event == name]


async def eventually(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 (polling what another task does)
            await asyncio.sleep(0.01)


@pytest.fixture
async def call(tmp_path: Path) -> AsyncIterator[Call]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'voxline.db'}")
    await store.open()
    async with FakeRealtimeServer(vad=False, respond=False) as server:
        spec = f"openai-realtime:{server.ws_url}#{MODEL}"
        settings = Settings(data_dir=tmp_path, llm="fake", realtime_max_backoff=0.1)
        agent = Agent(name="shop", llm=spec, tools=[FunctionTool(lookup_order)])
        session = Session(
            agent, llm=create_llm(spec, settings), store=store, settings=settings, channel="voice"
        )
        await session.start(greet=False)
        events: list[tuple[str, dict[str, Any]]] = []
        session.on("*", lambda event, **payload: events.append((event, payload)))
        out = Out()
        engine = RealtimeVoiceEngine(session, spec, out, audio=PCM24)
        engine.client._first_backoff = 0.05  # redial at once in tests
        await engine.start()
        try:
            yield Call(server, session, engine, out, events)
        finally:
            await engine.close()
            await session.close()
            await store.close()


def audio(data: bytes) -> str:
    return base64.b64encode(data).decode()


def user_turn(item: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    user = {
        "id": item,
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    return [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": start_ms, "item_id": item},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": item},
        {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None},
        {"type": "conversation.item.added", "item": user},
        {"type": "conversation.item.done", "item": user},
    ]


def transcript(item: str, text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": item,
        "content_index": 0,
        "transcript": text,
    }


def response_start(response: str, item: str) -> list[dict[str, Any]]:
    assistant = {
        "id": item,
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    ids = {"response_id": response, "item_id": item, "output_index": 0, "content_index": 0}
    return [
        {
            "type": "response.created",
            "response": {"id": response, "status": "in_progress", "output": []},
        },
        {
            "type": "response.output_item.added",
            "response_id": response,
            "output_index": 0,
            "item": assistant,
        },
        {"type": "conversation.item.added", "item": assistant},
        {"type": "response.content_part.added", **ids, "part": {"type": "audio"}},
    ]


def said(response: str, item: str, text: str = "", sound: bytes = b"") -> dict[str, Any]:
    ids = {"response_id": response, "item_id": item, "output_index": 0, "content_index": 0}
    if sound:
        return {"type": "response.output_audio.delta", **ids, "delta": audio(sound)}
    return {"type": "response.output_audio_transcript.delta", **ids, "delta": text}


def response_end(
    response: str, item: str, text: str, status: str = "completed"
) -> list[dict[str, Any]]:
    ids = {"response_id": response, "item_id": item, "output_index": 0, "content_index": 0}
    done_item = {
        "id": item,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_audio", "transcript": text}],
    }
    details = {"type": status, "reason": "max_output_tokens"} if status != "completed" else None
    return [
        {"type": "response.output_audio.done", **ids},
        {"type": "response.output_audio_transcript.done", **ids, "transcript": text},
        {
            "type": "response.content_part.done",
            **ids,
            "part": {"type": "audio", "transcript": text},
        },
        {
            "type": "response.output_item.done",
            "response_id": response,
            "output_index": 0,
            "item": done_item,
        },
        {"type": "conversation.item.done", "item": done_item},
        {
            "type": "response.done",
            "response": {
                "id": response,
                "status": status,
                "status_details": details,
                "output": [done_item],
            },
        },
    ]


async def replay(conn: Connection, events: list[dict[str, Any]]) -> None:
    for event in events:
        await conn.send(event)


A1, A2 = b"\x01\x02" * 480, b"\x03\x04" * 480  # 20 ms each at 24 kHz PCM16


async def test_interleaved_deltas_become_turns_in_the_callers_order(call: Call) -> None:
    conn = await call.conn()
    update = conn.of("session.update")[0]["session"]
    assert (
        update["type"] == "realtime" and update["audio"]["input"]["format"]["type"] == "audio/pcm"
    )
    assert [t["name"] for t in update["tools"]] == ["lookup_order"]
    call.session.on("reply_finished", lambda turn: call.out.timeline.append("done"))

    await replay(
        conn,
        [
            *user_turn("item_U1", 100, 900),
            *response_start("resp_1", "item_A1"),
            said("resp_1", "item_A1", "Our store"),
            said("resp_1", "item_A1", sound=A1),
            transcript("item_U1", "When do you open?"),  # after the answer began
            said("resp_1", "item_A1", sound=A2),
            said("resp_1", "item_A1", " opens at nine."),
            *response_end("resp_1", "item_A1", "Our store opens at nine."),
        ],
    )
    await eventually(lambda: "done" in call.out.timeline)

    user, bot = call.session.turns
    assert isinstance(user, UserTurn) and user.content == "When do you open?" and user.final
    assert isinstance(bot, BotTurn) and bot.content == "Our store opens at nine."
    assert bot.complete and not bot.interrupted and user.seq < bot.seq
    assert bytes(call.out.audio) == A1 + A2  # handed over as it came, untouched
    assert call.out.timeline == ["audio", "audio", "done"]  # never after response.done
    deltas = [p["delta"] for p in call.emitted("bot_text_delta")]
    assert "".join(deltas) == "Our store opens at nine."
    [turn] = [p["metrics"] for p in call.emitted("metrics") if p["kind"] == "turn"]
    assert turn.turn_id == user.id and turn.voice_to_voice is not None
    assert turn.transcript is None  # the answer's audio came before the transcript


async def test_incomplete_error_tool_and_a_dropped_socket(call: Call) -> None:
    conn = await call.conn()
    first_session = conn.of("session.update")[0]["session"]
    await replay(
        conn,
        [
            *user_turn("item_U1", 0, 800),
            transcript("item_U1", "When do you open?"),
            *response_start("resp_1", "item_A1"),
            said("resp_1", "item_A1", "At nine."),
            said("resp_1", "item_A1", sound=A1),
            *response_end("resp_1", "item_A1", "At nine."),
            # A response cut by the token limit (beta names for the deltas: accepted too).
            *user_turn("item_U2", 1000, 1800),
            transcript("item_U2", "And on Sunday?"),
            *response_start("resp_2", "item_A2"),
            {
                **said("resp_2", "item_A2", "On Sundays we"),
                "type": "response.audio_transcript.delta",
            },
            {**said("resp_2", "item_A2", sound=A2), "type": "response.audio.delta"},
            *response_end("resp_2", "item_A2", "On Sundays we", status="incomplete"),
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": "bad_thing",
                    "message": "Something was off.",
                    "event_id": None,
                },
            },
        ],
    )
    await eventually(lambda: len(call.bots()) == 2 and call.bots()[1].interrupted)
    assert [b.content for b in call.bots()] == ["At nine.", "On Sundays we"]
    assert call.bots()[0].complete and not call.bots()[1].complete
    await eventually(lambda: bool(call.emitted("error")))
    assert "bad_thing" in str(call.emitted("error")[0]["error"])

    # The model calls a tool: it runs through the executor, its result goes back, and the
    # model is asked to go on once the response that asked is done.
    fc = {
        "id": "item_F1",
        "type": "function_call",
        "call_id": "call_1",
        "name": "lookup_order",
        "arguments": '{"order_id": "A17"}',
        "status": "completed",
    }
    await replay(
        conn,
        [
            *user_turn("item_U3", 2000, 2800),
            transcript("item_U3", "Where is order A17?"),
            {"type": "response.created", "response": {"id": "resp_3", "status": "in_progress"}},
            {
                "type": "response.output_item.added",
                "response_id": "resp_3",
                "item": {**fc, "status": "in_progress", "arguments": ""},
            },
            {
                "type": "response.function_call_arguments.delta",
                "response_id": "resp_3",
                "item_id": "item_F1",
                "call_id": "call_1",
                "delta": '{"order_id": ',
            },
            {
                "type": "response.function_call_arguments.done",
                "response_id": "resp_3",
                "item_id": "item_F1",
                "call_id": "call_1",
                "name": "lookup_order",
                "arguments": fc["arguments"],
            },
            {"type": "response.output_item.done", "response_id": "resp_3", "item": fc},
            {
                "type": "response.done",
                "response": {"id": "resp_3", "status": "completed", "output": [fc]},
            },
        ],
    )
    await eventually(lambda: bool(conn.of("response.create")))
    [output] = conn.outputs
    assert output["call_id"] == "call_1" and "shipped yesterday" in output["output"]

    # The answer starts, and the socket dies under it.
    await replay(
        conn,
        [
            *response_start("resp_4", "item_A4"),
            said("resp_4", "item_A4", "Your order"),
            said("resp_4", "item_A4", sound=A1),
        ],
    )
    await eventually(lambda: call.bots()[-1].content == "Your order")
    await conn.drop()

    again = await call.conn(1)
    assert again.of("session.update")[0]["session"] == first_session  # the session restored
    await eventually(lambda: bool(again.of("response.create")))  # the lost answer is asked again
    seeded = [e["item"] for e in again.of("conversation.item.create")]
    assert [(i["type"], i.get("role"), _text(i)) for i in seeded] == [
        ("message", "user", "When do you open?"),
        ("message", "assistant", "At nine."),
        ("message", "user", "And on Sunday?"),
        ("message", "assistant", "On Sundays we"),
        ("message", "user", "Where is order A17?"),
        ("function_call", None, None),
        ("function_call_output", None, None),
        ("message", "assistant", "Your order"),
    ]
    first_create = again.received.index(again.of("response.create")[0])
    assert first_create > again.received.index(again.of("conversation.item.create")[-1])
    lost = call.bots()[-1]
    assert lost.interrupted and not lost.complete

    await replay(
        again,
        [
            *response_start("resp_5", "item_A5"),
            said("resp_5", "item_A5", "It shipped yesterday."),
            said("resp_5", "item_A5", sound=A2),
            *response_end("resp_5", "item_A5", "It shipped yesterday."),
        ],
    )
    await eventually(lambda: call.bots()[-1].complete)
    assert call.engine.client.reconnects == 1

    # The store ends consistent: every answer settled, every call answered, nothing empty.
    turns = list(call.session.turns)
    assert all(b.complete or b.interrupted for b in call.bots())
    calls = {t.call_id for t in turns if isinstance(t, ToolCallTurn)}
    assert calls == {t.call_id for t in turns if isinstance(t, ToolResultTurn)} == {"call_1"}
    assert all(t.content and t.final for t in turns if isinstance(t, UserTurn))
    assert [t.seq for t in turns] == sorted(t.seq for t in turns)
    await call.session.wait_idle()
    stored = await call.session.store.load_turns(call.session.id)
    assert [(t["id"], t["version"]) for t in stored] == [(t.id, t.version) for t in turns]


async def test_barge_in_truncates_at_the_played_milliseconds(call: Call) -> None:
    conn = await call.conn()
    words = "one two three four five six seven eight nine ten"
    second = b"\x05\x06" * 24000  # one second of PCM16 at 24 kHz
    await replay(
        conn,
        [
            *user_turn("item_U1", 0, 500),
            transcript("item_U1", "Count to ten."),
            *response_start("resp_1", "item_A1"),
            said("resp_1", "item_A1", words),
            said("resp_1", "item_A1", sound=second),
            *response_end("resp_1", "item_A1", words),
        ],
    )
    await eventually(lambda: bool(call.bots()) and call.bots()[0].complete)
    call.out.playing, call.out.played["item_A1"] = True, 48000 * 420 // 1000  # 420 ms heard

    await conn.send(
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 3000, "item_id": "item_U2"}
    )
    await eventually(lambda: bool(conn.of("conversation.item.truncate")))
    [truncate] = conn.of("conversation.item.truncate")
    assert truncate["item_id"] == "item_A1" and truncate["audio_end_ms"] == 420
    assert call.out.cleared == 1
    [bot] = call.bots()
    assert bot.interrupted and bot.content == heard_text(words, 420, 1000) == "one two three four"
    [interrupted] = call.emitted("interrupted")
    assert interrupted["turn"] is bot

    # Late deltas of the cut item are not played.
    await conn.send(said("resp_1", "item_A1", sound=A1))
    await asyncio.sleep(0.1)
    assert len(call.out.audio) == len(second)


def _text(item: dict[str, Any]) -> str | None:
    content = item.get("content")
    return content[0]["text"] if content else None
