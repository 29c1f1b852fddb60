"""TwiML as Twilio reads it: exact attribute names, escaped text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from voxline.agents.spec import AgentSpec
from voxline.agents.twilio import TwilioOptions
from voxline.channels.twiml import (
    RelayConnect,
    dial_twiml,
    messages_twiml,
    relay_twiml,
    say_and_hangup_twiml,
)


def test_conversation_relay_attributes() -> None:
    spec = AgentSpec(name="shop", language="en-GB", turn={"interruptible": False})
    options = TwilioOptions(
        voice="UgBBYS2sOqTuMpoF3BR0",
        tts_provider="ElevenLabs",
        transcription_provider="Deepgram",
        speech_model="nova-3-general",
        partial_prompts=True,
        languages=[{"code": "es-ES", "tts_provider": "Google", "voice": "es-ES-Neural2-B"}],
    )
    connect = RelayConnect(
        websocket_url="wss://v.example/twilio/relay",
        action_url="https://v.example/twilio/relay/action/shop",
        welcome_greeting='Hi & welcome to "Shop"',
        parameters={"voxlineAgent": "shop"},
    )
    document = relay_twiml(spec, options, connect)
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?><Response>')
    root = ET.fromstring(document)
    connect_el = root.find("Connect")
    assert connect_el is not None
    assert connect_el.attrib == {
        "action": "https://v.example/twilio/relay/action/shop",
        "method": "POST",
    }
    relay = connect_el.find("ConversationRelay")
    assert relay is not None
    assert relay.attrib == {
        "url": "wss://v.example/twilio/relay",
        "welcomeGreeting": 'Hi & welcome to "Shop"',
        "language": "en-GB",
        "ttsProvider": "ElevenLabs",
        "voice": "UgBBYS2sOqTuMpoF3BR0",
        "transcriptionProvider": "Deepgram",
        "speechModel": "nova-3-general",
        "interruptible": "none",
        "dtmfDetection": "true",
        "partialPrompts": "true",
    }
    [language] = relay.findall("Language")
    assert language.attrib == {"code": "es-ES", "ttsProvider": "Google", "voice": "es-ES-Neural2-B"}
    [parameter] = relay.findall("Parameter")
    assert parameter.attrib == {"name": "voxlineAgent", "value": "shop"}


def test_messages_say_and_dial() -> None:
    root = ET.fromstring(messages_twiml(["a < b", "second"]))
    assert [m.text for m in root.findall("Message")] == ["a < b", "second"]
    assert messages_twiml([]).endswith("<Response />")
    assert "<Say>Bye &amp; thanks</Say><Hangup />" in say_and_hangup_twiml("Bye & thanks")
    assert "<Dial>+18005550199</Dial>" in dial_twiml("+18005550199")
    assert "<Dial><Sip>sip:desk@pbx.example</Sip></Dial>" in dial_twiml("sip:desk@pbx.example")
