"""TwiML documents the server answers Twilio with (protocols.md §1.1, §2.1, §3.2).

Built with ElementTree so every attribute and body is escaped; attribute names are Twilio's
exact lowerCamel spellings, because Twilio silently ignores names it does not know.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from voxline.agents.spec import AgentSpec
from voxline.agents.twilio import TwilioOptions


@dataclass(frozen=True)
class RelayConnect:
    """What a `<Connect><ConversationRelay>` needs besides the agent's options."""

    websocket_url: str
    action_url: str
    welcome_greeting: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    recording_status_url: str | None = None  # where Twilio reports a finished recording


def relay_twiml(spec: AgentSpec, options: TwilioOptions, connect: RelayConnect) -> str:
    """ConversationRelay for `spec`. An agent that records its calls has Twilio record this
    one (`<Start><Recording>`, both sides on two channels) before it connects: voxline never
    hears ConversationRelay audio, so only Twilio can; the file stays in the Twilio account."""
    response = ET.Element("Response")
    recording = spec.recording
    if recording.enabled and recording.twilio_relay:
        start = ET.SubElement(response, "Start")
        attributes = _present(
            channels="dual",
            track="both",
            recordingStatusCallback=connect.recording_status_url,
            recordingStatusCallbackMethod="POST" if connect.recording_status_url else None,
        )
        ET.SubElement(start, "Recording", attributes)
    connect_el = ET.SubElement(response, "Connect", action=connect.action_url, method="POST")
    attributes = _present(
        url=connect.websocket_url,
        welcomeGreeting=connect.welcome_greeting,
        language=options.language_for(spec),
        ttsProvider=options.tts_provider,
        voice=options.voice,
        transcriptionProvider=options.transcription_provider,
        speechModel=options.speech_model,
        interruptible=options.interruptible_for(spec),
        dtmfDetection=_bool(options.dtmf_detection),
        partialPrompts=_bool(True) if options.partial_prompts else None,
        hints=",".join(options.hints) or None,
    )
    relay = ET.SubElement(connect_el, "ConversationRelay", attributes)
    for lang in options.languages:
        ET.SubElement(
            relay,
            "Language",
            _present(
                code=lang.code,
                ttsProvider=lang.tts_provider,
                voice=lang.voice,
                transcriptionProvider=lang.transcription_provider,
                speechModel=lang.speech_model,
            ),
        )
    for name, value in connect.parameters.items():
        ET.SubElement(relay, "Parameter", name=name, value=value)
    return _document(response)


def stream_twiml(websocket_url: str, parameters: Mapping[str, str]) -> str:
    """A bidirectional Media Stream (protocols.md §2.1): `<Connect><Stream>`. Values go in
    `<Parameter>`s because Twilio refuses a `<Stream url>` with a query string."""
    response = ET.Element("Response")
    stream = ET.SubElement(ET.SubElement(response, "Connect"), "Stream", url=websocket_url)
    for name, value in parameters.items():
        ET.SubElement(stream, "Parameter", name=name, value=value)
    return _document(response)


def messages_twiml(bodies: Iterable[str]) -> str:
    """One `<Message>` per body; no bodies gives `<Response/>` (no reply)."""
    response = ET.Element("Response")
    for body in bodies:
        ET.SubElement(response, "Message").text = body
    return _document(response)


def say_and_hangup_twiml(text: str) -> str:
    response = ET.Element("Response")
    ET.SubElement(response, "Say").text = text
    ET.SubElement(response, "Hangup")
    return _document(response)


def dial_twiml(target: str) -> str:
    response = ET.Element("Response")
    dial = ET.SubElement(response, "Dial")
    if target.startswith("sip:"):
        ET.SubElement(dial, "Sip").text = target
    else:
        dial.text = target
    return _document(response)


def hangup_twiml() -> str:
    response = ET.Element("Response")
    ET.SubElement(response, "Hangup")
    return _document(response)


def _present(**attributes: str | None) -> dict[str, str]:
    return {k: v for k, v in attributes.items() if v is not None}


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _document(root: ET.Element) -> str:
    body = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    return f'<?xml version="1.0" encoding="UTF-8"?>{body}'
