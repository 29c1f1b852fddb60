"""`AgentSpec`: an agent as JSON, validated by pydantic, with a publishable JSON Schema.

One spec drives every channel, so it holds what differs between agents (instructions, model
choices, tools, turn-taking and approval policy) and nothing that differs between deployments
(keys, URLs, database), which belongs to `Settings`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from voxline.agents.twilio import TwilioOptions
from voxline.conversation.filler import ToolFillerSettings
from voxline.conversation.summary_policy import SummaryPolicy
from voxline.guardrails.config import (
    DEFAULT_HANDOFF_RESPONSE,
    DEFAULT_RESPONSE,
    InputGuardrails,
    OutputGuardrails,
)
from voxline.providers.llm.base import ConfigurationError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TurnSettings(_Section):
    """How the agent takes turns on voice channels."""

    interruptible: bool = Field(True, description="Whether caller speech may cut the agent off.")
    min_interruption_duration: float = Field(
        0.5, ge=0, description="Seconds of caller speech before it counts as an interruption."
    )
    min_interruption_words: int = Field(
        0, ge=0, description="Words the caller must say before an interruption is confirmed."
    )
    backchannels: list[str] = Field(
        default_factory=lambda: ["uh-huh", "mm-hmm", "yeah", "okay", "right", "yes", "sure"],
        description="Short acknowledgements that never interrupt the agent.",
    )
    end_of_turn_silence: float = Field(
        0.6, gt=0, description="Seconds of silence that end the caller's turn."
    )
    end_of_turn: Literal["silence", "provider", "smart-turn"] = Field(
        "silence",
        description="Who decides the caller has finished: 'silence' (voxline's VAD and "
        "end_of_turn_silence) or 'provider' (a streaming recognizer's own end-of-turn signal: "
        "Deepgram speech_final/UtteranceEnd, Flux EndOfTurn, AssemblyAI end_of_turn; silence "
        "still decides whenever no stream is up) or 'smart-turn' (the offline smart-turn v3 "
        "model judges each short pause; extra voxline[smart-turn]).",
    )
    min_speech: float = Field(0.2, gt=0, description="Seconds of speech that start a turn.")
    pre_roll: float = Field(0.3, ge=0, description="Seconds of audio kept before speech onset.")
    tool_filler: ToolFillerSettings = Field(
        default_factory=ToolFillerSettings,
        description="A short phrase said on voice channels as soon as the model chooses a tool, "
        "so the caller does not wait in silence while the call is written and run.",
    )


class ApprovalSettings(_Section):
    """Human approval of sensitive tools."""

    tools: list[str] = Field(
        default_factory=list, description="Tools that need approval, besides those that say so."
    )
    pending_message: str = Field(
        "Let me check that with a colleague. I'll get back to you as soon as I hear.",
        description="What the agent says while a call waits for a human.",
    )


class GuardrailSettings(_Section):
    """Limits on what the agent hears and says (personal data in logs is redacted
    process-wide); see docs/guardrails.md."""

    max_reply_chars: int | None = Field(
        None,
        gt=0,
        description="Cut a reply off after this many characters: stops runaway monologues on "
        "voice channels, where the caller cannot skim.",
    )
    input: InputGuardrails = Field(default_factory=InputGuardrails)
    output: OutputGuardrails = Field(default_factory=OutputGuardrails)
    response: str = Field(
        DEFAULT_RESPONSE,
        description="What the agent says when a check with action 'respond' trips.",
    )
    handoff_response: str = Field(
        DEFAULT_HANDOFF_RESPONSE,
        description="What the agent says before a transfer when a check with action 'handoff' "
        "trips.",
    )
    redact_stored_pii: bool = Field(
        False,
        description="Mask card numbers, e-mails, phone numbers and national ids in stored "
        "transcripts and the debug feed; the live model still sees what was said.",
    )


class RecordingSettings(_Section):
    """Call recordings (see docs/guardrails.md, "Recordings and audit")."""

    enabled: bool = Field(
        False,
        description="Record calls: voxline-pipeline calls (Media Streams, the browser) to a "
        "stereo WAV file (caller left, agent right, 16 kHz); ConversationRelay calls are "
        "recorded by Twilio when `twilio_relay` is on.",
    )
    path: str = Field(
        "{agent}/{date}/{conversation}-{connection}.wav",
        pattern=r"^[A-Za-z0-9_{}./-]+\.wav$",
        description="Where a recording goes, under the server's recordings directory: "
        "{agent}, {date} (YYYY-MM-DD, UTC), {conversation} and {connection} are filled in. "
        "Relative, no '..'.",
    )
    twilio_relay: bool = Field(
        True,
        description="On ConversationRelay calls, ask Twilio to record both sides "
        "(<Start><Recording>); the recording stays in the Twilio account.",
    )

    @field_validator("path")
    @classmethod
    def _stays_inside(cls, value: str) -> str:
        parts = value.split("/")
        if value.startswith("/") or ".." in parts or "" in parts:
            raise ValueError("must be a relative path without '..' or empty parts")
        unknown = set(re.findall(r"{([^}]*)}", value)) - {
            "agent",
            "date",
            "conversation",
            "connection",
        }
        if unknown:
            raise ValueError(f"unknown placeholders {sorted(unknown)}")
        return value


# What providers accept as a function name; checked on plain names and ToolSpecs alike.
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")]


class ToolSpec(_Section):
    """A tool as JSON: a registered Python tool by name, with per-agent overrides; or a client
    tool, which exists only as this declaration and is answered by the API client connected to
    the call's debug feed (so a web page or a test harness can own a tool without deploying
    code on the server)."""

    name: ToolName
    kind: Literal["python", "client"] = "python"
    description: str | None = Field(None, validate_default=True)
    parameters: dict[str, Any] | None = Field(
        None,
        description="Client tools only: JSON Schema (an object schema) of the arguments. A "
        "Python tool's schema comes from its signature.",
    )
    timeout: float | None = Field(None, gt=0)
    retries: int | None = Field(None, ge=0, le=10)
    needs_approval: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any] | None, info: ValidationInfo) -> Any:
        if value is None:
            return value
        if info.data.get("kind") != "client":
            raise ValueError("only client tools declare parameters")
        if value.get("type") != "object" or not isinstance(value.get("properties", {}), dict):
            raise ValueError('must be an object schema: {"type": "object", "properties": {...}}')
        return value

    @field_validator("description")
    @classmethod
    def _client_tools_say_what_they_do(cls, value: str | None, info: ValidationInfo) -> Any:
        if info.data.get("kind") == "client" and not value:
            raise ValueError("a client tool needs a description: the model reads it")
        return value


class AgentSpec(_Section):
    """Everything that defines an agent, as JSON."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Unique name, used in URLs."
    )
    description: str = ""
    instructions: str = Field(
        "You are a helpful, concise voice assistant.", description="The system prompt."
    )
    llm: str | None = Field(
        None,
        description="LLM spec: 'local', 'openai:gpt-4.1-mini', "
        "'openai-compatible:http://127.0.0.1:8000/v1#model', 'anthropic:MODEL', or 'a,b' to "
        "fall back from a to b. Empty: the server's default.",
    )
    stt: str | None = Field(None, description="Speech-to-text spec; empty: the default.")
    stt_hints: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list,
        max_length=50,
        description="Names and terms callers will say that a recognizer may not know (the "
        "business, its people, streets, products). The embedded recognizer reads them as "
        "context before each utterance and so hears and spells them as written.",
    )
    tts: str | None = Field(None, description="Text-to-speech spec; empty: the default.")
    voice: str | None = Field(None, description="A voice name the TTS provider knows.")
    greeting: str | None = Field(None, description="Said when a conversation starts.")
    error_message: str = Field(
        "Sorry, something went wrong on my side. Could you say that again?",
        description="Said when the model fails mid-conversation, so the caller is not left in "
        "silence.",
    )
    language: str = Field("en-US", description="BCP-47 language of the conversation.")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0, le=32768)
    model_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra options passed to the LLM provider as is."
    )
    max_tool_steps: int = Field(
        4,
        ge=1,
        le=32,
        description="Rounds of tool calls allowed in one reply; at the limit the model says "
        "what it did and what is left, without calling more.",
    )
    tools: list[ToolName | ToolSpec] = Field(default_factory=list)
    turn: TurnSettings = Field(default_factory=TurnSettings)
    summarization: SummaryPolicy = Field(default_factory=SummaryPolicy)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    twilio: TwilioOptions = Field(
        default_factory=TwilioOptions, description="Phone settings for calls through Twilio."
    )
    web: bool | None = Field(
        None,
        description="Whether the browser channel (the page at / and the /web/call socket) may "
        "open this agent. Empty: yes for agents hosted from the server's own files or code, no "
        "for agents defined over the API (set true to offer one in the browser).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    def tool_specs(self) -> list[ToolSpec]:
        return [ToolSpec(name=t) if isinstance(t, str) else t for t in self.tools]


def agent_json_schema() -> dict[str, Any]:
    return AgentSpec.model_json_schema()


def load_agent_spec(path: str | Path) -> AgentSpec:
    """Read an agent JSON file; every problem becomes one readable `ConfigurationError`."""
    file = Path(path)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"agent file not found: {file}") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{file}: not valid JSON: {exc}") from None
    try:
        return AgentSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"{file}: invalid agent: {problems}") from None
