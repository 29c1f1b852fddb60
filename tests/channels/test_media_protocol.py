"""Media Streams messages and the transport's mark bookkeeping, without a socket or models."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest

from voxline.audio import AudioFrame, mulaw_decode
from voxline.channels import media_protocol as wire
from voxline.channels.twilio_media import MediaStreamTransport
from voxline.channels.twiml import stream_twiml

SID = "MZ" + "0" * 32


def test_twilio_documented_messages_parse_and_unknown_fields_are_ignored() -> None:
    start = wire.parse_event(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": SID,
                "start": {
                    "accountSid": "AC1",
                    "streamSid": SID,
                    "callSid": "CA1",
                    "tracks": ["inbound"],
                    "customParameters": {"voxlineAgent": "shop", "n": 7},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000"},
                    "somethingNew": {"x": 1},
                },
            }
        )
    )
    assert start == wire.Start(
        stream_sid=SID,
        call_sid="CA1",
        custom_parameters={"voxlineAgent": "shop", "n": "7"},
    )
    media = wire.parse_event(
        '{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":'
        '{"track":"inbound","chunk":"1","timestamp":"20","payload":"/v7+"}}'
    )
    assert media == wire.Media(payload="/v7+", track="inbound")
    assert isinstance(media, wire.Media) and media.audio() == b"\xfe\xfe\xfe"
    assert wire.parse_event('{"event":"mark","mark":{"name":"vx-3"}}') == wire.Mark("vx-3")
    dtmf = '{"event":"dtmf","dtmf":{"track":"inbound_track","digit":1}}'
    assert wire.parse_event(dtmf) == wire.Dtmf("1")
    assert wire.parse_event('{"event":"stop","stop":{"callSid":"CA1"}}') == wire.Stop()
    connected = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
    assert wire.parse_event(connected) == wire.Connected()
    assert wire.parse_event('{"event":"brandNew","x":1}') == wire.Unknown("brandNew")


def test_missing_or_odd_bodies_parse_to_empty_fields() -> None:
    assert wire.parse_event('{"event":"media"}') == wire.Media(payload="")
    assert wire.parse_event('{"event":"mark","mark":"vx-1"}') == wire.Mark("")
    start = wire.parse_event('{"event":"start","streamSid":"MZ9","start":[]}')
    assert start == wire.Start(stream_sid="MZ9")
    odd = '{"event":"start","start":{"callSid":{"x":1},"customParameters":[1]}}'
    assert wire.parse_event(odd) == wire.Start()


@pytest.mark.parametrize("frame", ["{not json", '["a list"]', '{"no":"event"}', '{"event":5}'])
def test_frames_that_are_not_events_are_errors(frame: str) -> None:
    with pytest.raises(wire.MediaProtocolError):
        wire.parse_event(frame)


@pytest.mark.parametrize("payload", ["not base64!", "abc", "/v7+/v7", "%%%%"])
def test_a_payload_that_is_not_exact_base64_is_an_error_not_shifted_audio(payload: str) -> None:
    with pytest.raises(wire.MediaProtocolError):
        wire.Media(payload=payload).audio()


def test_an_odd_number_of_mulaw_bytes_is_still_audio() -> None:
    """mu-law is one byte a sample: an odd count is a short frame, not a split sample."""
    payload = base64.b64encode(b"\xff" * 159).decode()
    assert len(mulaw_decode(wire.Media(payload=payload).audio())) == 159


def test_outbound_messages_are_exactly_twilios_shapes() -> None:
    assert json.loads(wire.media(SID, b"\x00\xff")) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": "AP8="},
    }
    assert json.loads(wire.mark(SID, "vx-1")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "vx-1"},
    }
    assert json.loads(wire.clear(SID)) == {"event": "clear", "streamSid": SID}


def test_stream_twiml_passes_values_as_parameters_not_a_query() -> None:
    xml = stream_twiml("wss://x.test/twilio/media", {"voxlineAgent": "a&b", "voxlineCaller": "+1"})
    assert xml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://x.test/twilio/media">'
        '<Parameter name="voxlineAgent" value="a&amp;b" />'
        '<Parameter name="voxlineCaller" value="+1" />'
        "</Stream></Connect></Response>"
    )


def frame(index: int) -> AudioFrame:
    pcm = np.full(160, 1000 * index, dtype=np.int16)
    return AudioFrame(pcm, 8000, index * 0.02)


async def written(transport: MediaStreamTransport) -> list[dict[str, object]]:
    """What the writer sends now (it runs until cancelled, so stop it once it is idle)."""
    sent: list[str] = []

    async def send_text(text: str) -> None:
        sent.append(text)

    task = asyncio.create_task(transport.write(send_text))
    await asyncio.sleep(0.01)
    task.cancel()
    return [json.loads(text) for text in sent]


async def test_each_frame_is_a_media_message_and_a_mark_for_its_end() -> None:
    transport = MediaStreamTransport(SID)
    for index in range(3):
        await transport.send(frame(index))
    messages = await written(transport)
    assert [m["event"] for m in messages] == ["media", "mark"] * 3
    first = messages[0]["media"]
    assert isinstance(first, dict)
    assert len(base64.b64decode(first["payload"])) == 160
    names = [m["mark"]["name"] for m in messages if m["event"] == "mark"]  # type: ignore[index]
    assert len(set(names)) == 3
    # echoes arrive in order; one echo confirms every mark before it too
    assert transport.confirmed(names[1]) == pytest.approx(0.04)
    assert transport.confirmed(names[0]) is None
    assert transport.confirmed(names[2]) == pytest.approx(0.06)
    assert transport.confirmed("someone-elses") is None


async def test_clear_takes_back_unsent_audio_and_forgets_pending_marks() -> None:
    transport = MediaStreamTransport(SID)
    await transport.send(frame(0))
    assert len(await written(transport)) == 2  # that frame is at Twilio
    await transport.send(frame(1))
    await transport.send(frame(2))
    transport.clear()  # before the writer got to frames 1 and 2
    assert await written(transport) == [{"event": "clear", "streamSid": SID}]
    # Twilio echoes marks of cleared audio at once: they were never heard
    assert transport.confirmed("vx-1") is None
    await transport.send(frame(3))
    assert transport.confirmed("vx-4") == pytest.approx(0.08)


async def test_nothing_is_sent_after_the_stream_is_closed() -> None:
    transport = MediaStreamTransport(SID)
    await transport.send(frame(0))
    transport.close()
    await transport.send(frame(1))
    transport.clear()
    assert await written(transport) == []
