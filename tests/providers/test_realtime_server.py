"""The fake Realtime server, checked against the official `openai` SDK.

The SDK parses every server event into its own model by `type`, without validation; a fake
that names an event or a field wrongly would still "work" against our own client and mislead
every test built on it. So the SDK itself connects (`AsyncOpenAI(base_url=…).realtime.connect`),
and each event it receives must come out as the SDK type protocols.md §4.5 names, in the order
§4.5 gives for a server-VAD turn.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI
from openai.types import realtime as rt

from tests.providers.realtime_server import Call, FakeRealtimeServer, Reply

RATE = 24000


def tone(seconds: float, level: int = 8000) -> bytes:
    """PCM16 24 kHz: speech to the fake's VAD."""
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * level).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(int(RATE * seconds) * 2)


SESSION: dict[str, Any] = {
    "type": "realtime",
    "instructions": "You are the shop's assistant.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": RATE},
            "transcription": {"model": "gpt-4o-mini-transcribe"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 200},
        },
        "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": "marin"},
    },
    "tools": [
        {
            "type": "function",
            "name": "get_hours",
            "description": "Opening hours.",
            "parameters": {"type": "object", "properties": {}},
        }
    ],
}

# protocols.md §4.5, a server-VAD turn, as the SDK types them.
TURN = [
    rt.SessionCreatedEvent,
    rt.SessionUpdatedEvent,
    rt.InputAudioBufferSpeechStartedEvent,
    rt.InputAudioBufferSpeechStoppedEvent,
    rt.InputAudioBufferCommittedEvent,
    rt.ConversationItemAdded,
    rt.ConversationItemDone,
    rt.ResponseCreatedEvent,
    rt.ResponseOutputItemAddedEvent,
    rt.ConversationItemAdded,
    rt.ResponseContentPartAddedEvent,
]
AFTER_DELTAS = [
    rt.ResponseAudioDoneEvent,
    rt.ResponseAudioTranscriptDoneEvent,
    rt.ResponseContentPartDoneEvent,
    rt.ResponseOutputItemDoneEvent,
    rt.ConversationItemDone,
    rt.ResponseDoneEvent,
    rt.RateLimitsUpdatedEvent,
]
DELTAS = (rt.ResponseAudioDeltaEvent, rt.ResponseAudioTranscriptDeltaEvent)
TRANSCRIPTION = (
    rt.ConversationItemInputAudioTranscriptionDeltaEvent,
    rt.ConversationItemInputAudioTranscriptionCompletedEvent,
)


async def until(connection: Any, kind: type, seen: list[Any]) -> Any:
    async with asyncio.timeout(10):
        async for event in connection:
            seen.append(event)
            if isinstance(event, kind):
                return event
    raise AssertionError(f"the socket closed before {kind.__name__}")


async def test_a_server_vad_turn_reads_as_the_sdk_types_it() -> None:
    answer = tone(0.3, level=3000)
    script = [Reply("We open at nine.", answer, chunk=4800, user="When do you open?")]
    async with FakeRealtimeServer(script, api_key="sk-test") as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
        async with client.realtime.connect(model="gpt-realtime") as connection:
            await connection.session.update(session=SESSION)  # type: ignore[arg-type]
            for chunk in (tone(0.3), silence(0.4)):
                audio = base64.b64encode(chunk).decode()
                await connection.input_audio_buffer.append(audio=audio)
            seen: list[Any] = []
            done = await until(connection, rt.ResponseDoneEvent, seen)
            await until(connection, rt.RateLimitsUpdatedEvent, seen)
            if not any(isinstance(e, TRANSCRIPTION[1]) for e in seen):  # it arrives when it will
                await until(connection, TRANSCRIPTION[1], seen)
        conn = server.connections[0]
        assert conn.model == "gpt-realtime"
        assert conn.headers["Authorization"] == "Bearer sk-test"

    assert done.response.status == "completed"
    ordered = [e for e in seen if not isinstance(e, DELTAS + TRANSCRIPTION)]
    assert [type(e) for e in ordered] == TURN + AFTER_DELTAS
    for event in seen:  # the discriminated union matched every event by its type
        assert type(event).model_fields["type"].annotation.__args__ == (event.type,)
    sound = b"".join(base64.b64decode(e.delta) for e in seen if isinstance(e, DELTAS[0]))
    assert sound == answer
    text = "".join(e.delta for e in seen if isinstance(e, DELTAS[1]))
    assert text == "We open at nine."
    [completed] = [e for e in seen if isinstance(e, TRANSCRIPTION[1])]
    assert completed.transcript == "When do you open?"
    committed = next(e for e in seen if isinstance(e, rt.InputAudioBufferCommittedEvent))
    assert completed.item_id == committed.item_id
    stopped = next(e for e in seen if isinstance(e, rt.InputAudioBufferSpeechStoppedEvent))
    assert 280 <= stopped.audio_end_ms <= 320


async def test_a_function_call_round_trip_reads_as_the_sdk_types_it() -> None:
    script = [Reply(call=Call("get_hours", {"day": "monday"})), Reply("Nine to five.", tone(0.1))]
    async with FakeRealtimeServer(script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="x")
        async with client.realtime.connect(model="m") as connection:
            await connection.session.update(session=SESSION)  # type: ignore[arg-type]
            await connection.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hours?"}],
                }
            )
            await connection.response.create()
            seen: list[Any] = []
            done = await until(connection, rt.ResponseDoneEvent, seen)
            [call] = done.response.output or []
            assert isinstance(call, rt.RealtimeConversationItemFunctionCall)
            assert call.status == "completed" and call.name == "get_hours"
            [args] = [e for e in seen if isinstance(e, rt.ResponseFunctionCallArgumentsDoneEvent)]
            assert json.loads(args.arguments) == {"day": "monday"} and args.call_id == call.call_id
            pieces = [e for e in seen if isinstance(e, rt.ResponseFunctionCallArgumentsDeltaEvent)]
            assert "".join(p.delta for p in pieces) == args.arguments

            await connection.conversation.item.create(
                item={"type": "function_call_output", "call_id": call.call_id, "output": "9-5"}
            )
            await connection.response.create()
            done = await until(connection, rt.ResponseDoneEvent, seen)
            assert done.response.status == "completed"
        [output] = server.connections[0].outputs
        assert output["call_id"] == call.call_id and output["output"] == "9-5"


async def test_truncate_cancel_and_bad_input_read_as_the_sdk_types_them() -> None:
    script = [Reply("A long answer that goes on.", tone(1.0), chunk=2400, delay=0.05)]
    async with FakeRealtimeServer(script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="x")
        async with client.realtime.connect(model="m") as connection:
            await connection.session.update(session=SESSION)  # type: ignore[arg-type]
            await connection.response.cancel()  # nothing to cancel
            seen: list[Any] = []
            error = await until(connection, rt.RealtimeErrorEvent, seen)
            assert error.error.code == "response_cancel_not_active"

            await connection.response.create()
            added = await until(connection, rt.ResponseOutputItemAddedEvent, seen)
            await until(connection, rt.ResponseAudioDeltaEvent, seen)
            await connection.response.cancel()
            await connection.conversation.item.truncate(
                item_id=added.item.id or "", content_index=0, audio_end_ms=40
            )
            done = await until(connection, rt.ResponseDoneEvent, seen)
            assert done.response.status == "cancelled"
            truncated = next(  # before or after the cancel's response.done: both are right
                (e for e in seen if isinstance(e, rt.ConversationItemTruncatedEvent)), None
            ) or await until(connection, rt.ConversationItemTruncatedEvent, seen)
            assert (truncated.item_id, truncated.audio_end_ms) == (added.item.id, 40)

            await connection.send({"type": "no.such.event"})  # type: ignore[arg-type]
            error = await until(connection, rt.RealtimeErrorEvent, seen)
            assert error.error.type == "invalid_request_error"
            await connection.send_raw("{not json")
            error = await until(connection, rt.RealtimeErrorEvent, seen)
            assert error.error.code == "invalid_json"


async def test_a_bad_key_is_refused_on_the_upgrade() -> None:
    async with FakeRealtimeServer(api_key="right") as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="wrong")
        with pytest.raises(Exception, match="401"):
            async with client.realtime.connect(model="m"):
                pass
