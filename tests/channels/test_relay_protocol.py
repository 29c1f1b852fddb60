"""ConversationRelay messages parsed as tolerantly as Twilio asks."""

from __future__ import annotations

import json

import pytest

from voxline.channels import relay_protocol as wire


def test_setup_with_extra_and_missing_fields() -> None:
    message = wire.parse_message(
        json.dumps(
            {
                "type": "setup",
                "sessionId": "VX1",
                "callSid": "CA1",
                "from": "+14155550100",
                "to": "+18005550101",
                "direction": "inbound",
                "customParameters": {"voxlineAgent": "shop", "n": 3},
                "someFieldTwilioAddsLater": True,
            }
        )
    )
    assert isinstance(message, wire.Setup)
    assert message.remote_party == "+14155550100"
    assert message.custom_parameters == {"voxlineAgent": "shop", "n": "3"}
    outbound = wire.parse_message(
        '{"type":"setup","from":"+1800","to":"+1415","direction":"outbound-api"}'
    )
    assert isinstance(outbound, wire.Setup) and outbound.remote_party == "+1415"


@pytest.mark.parametrize("duration", [460, 460.5, "460", " 460 "])
def test_interrupt_durations_in_any_numeric_form(duration: object) -> None:
    message = wire.parse_message(
        json.dumps(
            {
                "type": "interrupt",
                "utteranceUntilInterrupt": "Our hours",
                "durationUntilInterruptMs": duration,
            }
        )
    )
    assert isinstance(message, wire.Interrupt)
    assert message.heard == "Our hours"
    assert message.duration_ms is not None and int(message.duration_ms) == 460


def test_prompts_dtmf_info_error_and_unknown() -> None:
    partial = wire.parse_message('{"type":"prompt","voicePrompt":"what","last":false}')
    assert partial == wire.Prompt(text="what", last=False)
    assert wire.parse_message(
        '{"type":"prompt","voicePrompt":"what","last":"true"}'
    ) == wire.Prompt(text="what", last=True)
    assert wire.parse_message('{"type":"dtmf","digit":5}') == wire.Dtmf(digit="5")
    assert wire.parse_message(
        '{"type":"info","name":"roundTripDelayMs","value":"148"}'
    ) == wire.Info(name="roundTripDelayMs", value="148")
    assert wire.parse_message('{"type":"error","description":"bad"}') == wire.RelayError("bad")
    assert wire.parse_message('{"type":"somethingNew"}') == wire.Unknown(type="somethingNew")
    interrupt = wire.parse_message('{"type":"interrupt","durationUntilInterruptMs":"soon"}')
    assert interrupt == wire.Interrupt(heard=None, duration_ms=None)


@pytest.mark.parametrize("frame", ["{oops", "[]", '{"type": 7}', '"text"', "{}"])
def test_frames_that_are_not_messages(frame: str) -> None:
    with pytest.raises(wire.RelayProtocolError):
        wire.parse_message(frame)


def test_outbound_messages() -> None:
    assert json.loads(wire.text_token("Hi", last=False)) == {
        "type": "text",
        "token": "Hi",
        "last": False,
    }
    assert json.loads(wire.text_token("Hola", last=True, lang="es-ES"))["lang"] == "es-ES"
    assert json.loads(wire.end('{"a":1}')) == {"type": "end", "handoffData": '{"a":1}'}
    assert json.loads(wire.end()) == {"type": "end"}
