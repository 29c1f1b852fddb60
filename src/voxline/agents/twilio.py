"""An agent's phone settings on Twilio (the `twilio` section of its JSON).

They live in the agent, not in `Settings`, because they differ per agent: the voice, the
languages, whether calls go through ConversationRelay or Media Streams, where a transfer goes.
Being part of `AgentSpec`, they are validated wherever an agent is (files at boot, the REST API),
so a typo fails there and not on a customer's call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from voxline.agents.spec import AgentSpec

Interruptible = Literal["any", "none", "speech", "dtmf"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RelayLanguage(_Options):
    """One `<Language>` the call may switch to."""

    code: str = Field(description="BCP-47 code, e.g. es-ES.")
    tts_provider: str | None = None
    voice: str | None = None
    transcription_provider: str | None = None
    speech_model: str | None = None


class TwilioOptions(_Options):
    transport: Literal["conversation_relay", "media_streams"] = Field(
        "conversation_relay",
        description="conversation_relay: Twilio does speech; media_streams: voxline does (audio).",
    )
    language: str | None = Field(None, description="Default: the agent's language.")
    voice: str | None = Field(None, description="The TTS provider's voice id.")
    tts_provider: str | None = Field(None, description="Google, Amazon or ElevenLabs.")
    transcription_provider: str | None = Field(None, description="Google or Deepgram.")
    speech_model: str | None = None
    interruptible: Interruptible | None = Field(
        None, description="Default: 'any' if the agent's turn settings allow interruptions."
    )
    dtmf_detection: bool = True
    partial_prompts: bool = False
    hints: list[str] = Field(default_factory=list, description="Phrases to bias recognition.")
    welcome_greeting: str | None = Field(None, description="Default: the agent's greeting.")
    languages: list[RelayLanguage] = Field(default_factory=list)
    transfer_to: str | None = Field(
        None, description="Number or SIP URI a transfer_to_human tool call dials."
    )
    end_call: bool = Field(True, description="Give the agent an end_call tool.")
    send_digits: bool = Field(False, description="Give the agent a send_digits tool (IVRs).")
    sounds: dict[str, str] = Field(
        default_factory=dict, description="Named audio URLs the agent may play (play_sound)."
    )

    def interruptible_for(self, spec: AgentSpec) -> Interruptible:
        if self.interruptible is not None:
            return self.interruptible
        return "any" if spec.turn.interruptible else "none"

    def language_for(self, spec: AgentSpec) -> str:
        return self.language or spec.language

    def greeting_for(self, spec: AgentSpec) -> str | None:
        return self.welcome_greeting if self.welcome_greeting is not None else spec.greeting

    def language_codes(self, spec: AgentSpec) -> list[str]:
        return [self.language_for(spec), *(lang.code for lang in self.languages)]
