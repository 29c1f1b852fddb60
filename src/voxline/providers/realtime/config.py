"""What a Realtime session is told (`session.update`), made from the agent.

The agent's fields map onto the GA session object (protocols.md §4.4): instructions, voice,
tools as function definitions, the audio format both ways, the transcription model that turns
the caller's speech into user turns, and turn detection. Turn detection comes from the agent's
`turn` settings (silence, pre-roll, whether the caller may interrupt) and, for what only a
Realtime model has, from `model_options` (read here, documented in docs/realtime.md):

- `turn_detection`: `server_vad` (default), `semantic_vad` or `none` (the client commits);
- `eagerness`: `low` | `medium` | `high` | `auto`, for `semantic_vad`;
- `vad_threshold`: 0..1, for `server_vad`;
- `transcription_model`: default `gpt-4o-mini-transcribe` (any name a compatible server knows);
- `noise_reduction`: `near_field` | `far_field`.

The audio format is the channel's: µ-law on Twilio, so the caller's bytes go to the model and
the model's bytes go to the phone untouched; PCM16 at 24 kHz elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voxline.providers.llm.base import ConfigurationError, ToolDefinition

if TYPE_CHECKING:
    from voxline.agents.spec import AgentSpec


@dataclass(frozen=True)
class AudioFormat:
    """A Realtime audio format and what it takes to count its bytes as time."""

    mime: str  # the GA `format.type`
    rate: int  # samples per second
    sample_bytes: int

    @property
    def bytes_per_ms(self) -> float:
        return self.rate * self.sample_bytes / 1000

    def ms(self, size: int) -> int:
        """Whole milliseconds of `size` bytes of this audio."""
        return int(size / self.bytes_per_ms)

    def wire(self) -> dict[str, Any]:
        if self.mime == "audio/pcm":
            return {"type": self.mime, "rate": self.rate}
        return {"type": self.mime}


PCMU = AudioFormat("audio/pcmu", 8000, 1)  # G.711 µ-law: Twilio's own, no resampling
PCM24 = AudioFormat("audio/pcm", 24000, 2)  # 16-bit little-endian PCM, the API's default

VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
DEFAULT_VOICE = "marin"
DEFAULT_TRANSCRIPTION = "gpt-4o-mini-transcribe"
TURN_DETECTION = ("server_vad", "semantic_vad", "none")
EAGERNESS = ("low", "medium", "high", "auto")
NOISE_REDUCTION = ("near_field", "far_field")


@dataclass(frozen=True)
class RealtimeSessionConfig:
    """Everything `session.update` carries; sent on every (re)connect."""

    instructions: str
    audio: AudioFormat = PCM24
    voice: str = DEFAULT_VOICE
    tools: Sequence[ToolDefinition] = ()
    transcription_model: str | None = DEFAULT_TRANSCRIPTION
    language: str | None = None
    turn_detection: str = "server_vad"
    eagerness: str = "auto"
    vad_threshold: float | None = None
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    interrupt_response: bool = True
    noise_reduction: str | None = None
    max_output_tokens: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # merged into the session as is

    def session(self) -> dict[str, Any]:
        """The GA session object."""
        audio_in: dict[str, Any] = {"format": self.audio.wire()}
        if self.transcription_model:
            transcription: dict[str, Any] = {"model": self.transcription_model}
            if self.language:
                transcription["language"] = self.language
            audio_in["transcription"] = transcription
        if self.noise_reduction:
            audio_in["noise_reduction"] = {"type": self.noise_reduction}
        audio_in["turn_detection"] = self._turn_detection()
        session: dict[str, Any] = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "instructions": self.instructions,
            "audio": {
                "input": audio_in,
                "output": {"format": self.audio.wire(), "voice": self.voice},
            },
            "tools": [
                {
                    "type": "function",
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                }
                for tool in self.tools
            ],
            "tool_choice": "auto",
        }
        if self.max_output_tokens is not None:
            session["max_output_tokens"] = self.max_output_tokens
        session.update(self.extra)
        return session

    def _turn_detection(self) -> dict[str, Any] | None:
        if self.turn_detection == "none":
            return None
        common = {"create_response": True, "interrupt_response": self.interrupt_response}
        if self.turn_detection == "semantic_vad":
            return {"type": "semantic_vad", "eagerness": self.eagerness, **common}
        detection: dict[str, Any] = {
            "type": "server_vad",
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            **common,
        }
        if self.vad_threshold is not None:
            detection["threshold"] = self.vad_threshold
        return detection


def config_from_agent(
    spec: AgentSpec,
    *,
    instructions: str,
    tools: Sequence[ToolDefinition],
    audio: AudioFormat,
) -> RealtimeSessionConfig:
    """The session an agent asks for; raises `ConfigurationError` (one line, the option named)
    for a Realtime option with a value the API does not know."""
    options = spec.model_options
    detection = _choice(options, "turn_detection", TURN_DETECTION, "server_vad")
    eagerness = _choice(options, "eagerness", EAGERNESS, "auto")
    noise = options.get("noise_reduction")
    if noise is not None and noise not in NOISE_REDUCTION:
        raise ConfigurationError(f"model_options.noise_reduction must be one of {NOISE_REDUCTION}")
    threshold = options.get("vad_threshold")
    if threshold is not None and not (isinstance(threshold, int | float) and 0 <= threshold <= 1):
        raise ConfigurationError("model_options.vad_threshold must be a number from 0 to 1")
    transcription = options.get("transcription_model", DEFAULT_TRANSCRIPTION)
    if transcription is not None and not isinstance(transcription, str):
        raise ConfigurationError("model_options.transcription_model must be a model name")
    voice = spec.voice if spec.voice in VOICES else DEFAULT_VOICE
    return RealtimeSessionConfig(
        instructions=instructions,
        audio=audio,
        voice=voice,
        tools=tuple(tools),
        transcription_model=transcription or None,
        language=spec.language.split("-")[0].lower() or None,
        turn_detection=detection,
        eagerness=eagerness,
        vad_threshold=float(threshold) if threshold is not None else None,
        prefix_padding_ms=round(spec.turn.pre_roll * 1000),
        silence_duration_ms=round(spec.turn.end_of_turn_silence * 1000),
        interrupt_response=spec.turn.interruptible,
        noise_reduction=noise,
        max_output_tokens=spec.max_tokens,
    )


def _choice(options: Mapping[str, Any], key: str, allowed: Sequence[str], default: str) -> str:
    value = options.get(key, default)
    if value not in allowed:
        raise ConfigurationError(f"model_options.{key} must be one of {', '.join(allowed)}")
    return str(value)
