"""The Realtime session object: what a client may configure, in both dialects.

GA nests audio settings under `audio.input` / `audio.output` and names formats with objects
(`{"type": "audio/pcm", "rate": 24000}`); beta keeps them flat with strings (`"pcm16"`). Both are
parsed into one `SessionConfig`, and rendered back in the client's dialect for
`session.created` / `session.updated`, always as the full effective session.

What is not honoured is still accepted and echoed (voice names, VAD threshold, noise
reduction: the agent's own voice and VAD run the call), except what would change the meaning of
the audio or of the conversation, which is refused with an `error`: A-law audio, PCM at another
rate, transcription-only sessions. An update is applied whole or not at all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxline.agents.spec import AgentSpec
from voxline.server.realtime.protocol import ClientError, Dialect


class AudioFormat(StrEnum):
    PCM16 = "pcm16"  # 16-bit little-endian PCM, 24 kHz mono
    ULAW = "g711_ulaw"  # G.711 mu-law, 8 kHz

    @property
    def rate(self) -> int:
        return 24000 if self is AudioFormat.PCM16 else 8000

    def ga(self) -> dict[str, Any]:
        if self is AudioFormat.PCM16:
            return {"type": "audio/pcm", "rate": 24000}
        return {"type": "audio/pcmu"}


@dataclass(frozen=True)
class TurnDetection:
    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 600
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: str | None = None
    idle_timeout_ms: int | None = None

    def render(self) -> dict[str, Any]:
        shown = dataclasses.asdict(self)
        if self.type == "semantic_vad":
            for key in ("threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"):
                shown.pop(key)
        else:
            shown.pop("eagerness")
        return shown


@dataclass(frozen=True)
class FunctionDef:
    """A client-executed function tool, as the client declared it."""

    name: str
    description: str
    parameters: dict[str, Any]

    def render(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }


@dataclass(frozen=True)
class SessionConfig:
    instructions: str = ""
    voice: Any = "alloy"
    input_format: AudioFormat = AudioFormat.PCM16
    output_format: AudioFormat = AudioFormat.PCM16
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    transcription: dict[str, Any] | None = None
    tools: tuple[FunctionDef, ...] = ()
    tool_choice: Any = "auto"
    output_modalities: tuple[str, ...] = ("audio",)
    max_output_tokens: int | Literal["inf"] = "inf"
    temperature: float = 0.8
    speed: float = 1.0
    noise_reduction: dict[str, Any] | None = None

    @classmethod
    def for_agent(cls, spec: AgentSpec) -> SessionConfig:
        """The defaults, with the agent's own end-of-turn silence for server VAD."""
        silence = round(spec.turn.end_of_turn_silence * 1000)
        return cls(
            voice=spec.voice or "alloy", turn_detection=TurnDetection(silence_duration_ms=silence)
        )

    @property
    def audio_out(self) -> bool:
        return "audio" in self.output_modalities

    @property
    def silence(self) -> float:
        """Seconds of silence that end a turn under server VAD."""
        detection = self.turn_detection
        if detection is None or detection.type != "server_vad":
            return 0.6 if detection is None else _EAGERNESS.get(detection.eagerness or "auto", 0.6)
        return max(0.1, detection.silence_duration_ms / 1000)

    def updated(self, session: dict[str, Any], dialect: Dialect) -> SessionConfig:
        """This configuration with a `session.update` payload applied (raises `ClientError`)."""
        try:
            if dialect is Dialect.BETA:
                return _apply_beta(self, _BetaSession.model_validate(session))
            return _apply_ga(self, _GASession.model_validate(session))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "session." + ".".join(str(part) for part in first["loc"])
            raise ClientError("invalid_value", f"{where}: {first['msg']}", param=where) from None

    def render(self, dialect: Dialect, *, session_id: str, model: str) -> dict[str, Any]:
        tools = [tool.render() for tool in self.tools]
        detection = self.turn_detection.render() if self.turn_detection else None
        if dialect is Dialect.BETA:
            return {
                "id": session_id,
                "object": "realtime.session",
                "model": model,
                "modalities": ["text", "audio"] if self.audio_out else ["text"],
                "instructions": self.instructions,
                "voice": self.voice,
                "input_audio_format": self.input_format.value,
                "output_audio_format": self.output_format.value,
                "input_audio_transcription": self.transcription,
                "input_audio_noise_reduction": self.noise_reduction,
                "turn_detection": detection,
                "tools": tools,
                "tool_choice": self.tool_choice,
                "temperature": self.temperature,
                "max_response_output_tokens": self.max_output_tokens,
                "speed": self.speed,
                "tracing": None,
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": self.input_format.ga(),
                    "transcription": self.transcription,
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": detection,
                },
                "output": {
                    "format": self.output_format.ga(),
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
            "tools": tools,
            "tool_choice": self.tool_choice,
            "max_output_tokens": self.max_output_tokens,
            "truncation": "auto",
            "tracing": None,
            "prompt": None,
            "include": None,
        }


_EAGERNESS = {"low": 1.2, "medium": 0.8, "auto": 0.8, "high": 0.5}
"""Semantic VAD is approximated by silence: the eagerness picks how long a pause ends a turn."""


# -- payloads -----------------------------------------------------------------------------------
class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Format(_Loose):
    type: str
    rate: int | None = None


class _TurnDetection(_Loose):
    type: Literal["server_vad", "semantic_vad"]
    threshold: float | None = Field(None, ge=0, le=1)
    prefix_padding_ms: int | None = Field(None, ge=0)
    silence_duration_ms: int | None = Field(None, ge=0, le=10_000)
    create_response: bool | None = None
    interrupt_response: bool | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    idle_timeout_ms: int | None = None


class _Tool(_Loose):
    type: Literal["function"] = "function"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class _AudioInput(_Loose):
    format: _Format | None = None
    transcription: dict[str, Any] | None = None
    turn_detection: _TurnDetection | None = None
    noise_reduction: dict[str, Any] | None = None


class _AudioOutput(_Loose):
    format: _Format | None = None
    voice: str | dict[str, Any] | None = None
    speed: float | None = Field(None, gt=0)


class _Audio(_Loose):
    input: _AudioInput | None = None
    output: _AudioOutput | None = None


class _Common(_Loose):
    instructions: str | None = None
    tools: list[_Tool] | None = Field(None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None


class _GASession(_Common):
    type: str | None = None
    output_modalities: list[Literal["audio", "text"]] | None = None
    audio: _Audio | None = None
    max_output_tokens: int | Literal["inf"] | None = None


class _BetaSession(_Common):
    modalities: list[Literal["audio", "text"]] | None = None
    voice: str | None = None
    input_audio_format: str | None = None
    output_audio_format: str | None = None
    input_audio_transcription: dict[str, Any] | None = None
    input_audio_noise_reduction: dict[str, Any] | None = None
    turn_detection: _TurnDetection | None = None
    temperature: float | None = None
    speed: float | None = Field(None, gt=0)
    max_response_output_tokens: int | Literal["inf"] | None = None


def _apply_common(config: SessionConfig, update: _Common, changes: dict[str, Any]) -> None:
    if update.instructions is not None:
        changes["instructions"] = update.instructions
    if update.tools is not None:
        names = [tool.name for tool in update.tools]
        if len(set(names)) != len(names):
            raise ClientError(
                "invalid_value", "two tools have the same name", param="session.tools"
            )
        changes["tools"] = tuple(
            FunctionDef(t.name, t.description, t.parameters) for t in update.tools
        )
    if update.tool_choice is not None:
        changes["tool_choice"] = update.tool_choice


def _apply_ga(config: SessionConfig, update: _GASession) -> SessionConfig:
    if update.type not in (None, "realtime"):
        raise ClientError(
            "unsupported_session_type",
            f"session type {update.type!r} is not supported here; use 'realtime'",
            param="session.type",
        )
    changes: dict[str, Any] = {}
    _apply_common(config, update, changes)
    if update.output_modalities:
        changes["output_modalities"] = tuple(update.output_modalities)
    if update.max_output_tokens is not None:
        changes["max_output_tokens"] = update.max_output_tokens
    audio = update.audio
    if audio is not None and audio.input is not None:
        given = audio.input.model_fields_set
        if audio.input.format is not None:
            changes["input_format"] = _ga_format(audio.input.format, "session.audio.input.format")
        if "transcription" in given:
            changes["transcription"] = audio.input.transcription
        if "noise_reduction" in given:
            changes["noise_reduction"] = audio.input.noise_reduction
        if "turn_detection" in given:
            changes["turn_detection"] = _detection(config, audio.input.turn_detection)
    if audio is not None and audio.output is not None:
        if audio.output.format is not None:
            changes["output_format"] = _ga_format(
                audio.output.format, "session.audio.output.format"
            )
        if audio.output.voice is not None:
            changes["voice"] = audio.output.voice
        if audio.output.speed is not None:
            changes["speed"] = audio.output.speed
    return dataclasses.replace(config, **changes)


def _apply_beta(config: SessionConfig, update: _BetaSession) -> SessionConfig:
    changes: dict[str, Any] = {}
    _apply_common(config, update, changes)
    given = update.model_fields_set
    if update.modalities:
        changes["output_modalities"] = ("audio",) if "audio" in update.modalities else ("text",)
    if update.voice is not None:
        changes["voice"] = update.voice
    if update.input_audio_format is not None:
        changes["input_format"] = _beta_format(update.input_audio_format, "input_audio_format")
    if update.output_audio_format is not None:
        changes["output_format"] = _beta_format(update.output_audio_format, "output_audio_format")
    if "input_audio_transcription" in given:
        changes["transcription"] = update.input_audio_transcription
    if "input_audio_noise_reduction" in given:
        changes["noise_reduction"] = update.input_audio_noise_reduction
    if "turn_detection" in given:
        changes["turn_detection"] = _detection(config, update.turn_detection)
    if update.temperature is not None:
        changes["temperature"] = update.temperature
    if update.speed is not None:
        changes["speed"] = update.speed
    if update.max_response_output_tokens is not None:
        changes["max_output_tokens"] = update.max_response_output_tokens
    return dataclasses.replace(config, **changes)


def _detection(config: SessionConfig, given: _TurnDetection | None) -> TurnDetection | None:
    if given is None:
        return None
    base = config.turn_detection or TurnDetection()
    values = {k: v for k, v in given.model_dump().items() if v is not None}
    return dataclasses.replace(base, **values)


def _ga_format(given: _Format, param: str) -> AudioFormat:
    if given.type == "audio/pcm" and given.rate in (None, 24000):
        return AudioFormat.PCM16
    if given.type == "audio/pcmu":
        return AudioFormat.ULAW
    raise ClientError(
        "unsupported_audio_format",
        f"audio format {given.model_dump(exclude_none=True)} is not supported; "
        "use audio/pcm at 24000 Hz or audio/pcmu",
        param=param,
    )


def _beta_format(given: str, param: str) -> AudioFormat:
    try:
        return AudioFormat(given)
    except ValueError:
        raise ClientError(
            "unsupported_audio_format",
            f"audio format {given[:40]!r} is not supported; use pcm16 or g711_ulaw",
            param=f"session.{param}",
        ) from None
