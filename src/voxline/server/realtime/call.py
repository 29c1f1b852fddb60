"""One socket's voxline session and the cascaded voice pipeline speaking it.

The endpoint is a wire adapter: everything about the call itself (turn taking, STT, the reply
engine, TTS, pacing, barge-in) is the same live session and `VoicePipeline` the browser and
Media Streams channels run, opened through the hub like theirs, on the agent's own models.

Two things can make the pipeline or the session need remaking mid-socket, and both happen only
while the call is quiet (the bridge waits for that): new audio formats or end-of-turn silence
(`rebuild`: a new pipeline on the same session), and new client tools (the session's tools are
fixed when it starts, so the bridge closes this call and opens another on the same
conversation, whose memory the hub keeps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from voxline.audio import SilenceEndOfTurn
from voxline.audio.turn_taking import GateEvent
from voxline.conversation.session import Session
from voxline.server.hub import ConversationHub, SessionOptions
from voxline.server.realtime.agent import RealtimeAgent
from voxline.server.realtime.audio import AudioSink, ObservedPipeline, RealtimeTransport
from voxline.server.realtime.client_tools import ClientCalls, RealtimeFunctionTool
from voxline.server.realtime.config import AudioFormat, FunctionDef, SessionConfig
from voxline.voice.pipeline import VoiceOptions
from voxline.voice.providers import SpeechProviders

CHANNEL = "realtime"
FRAME_SECONDS = 0.05
"""One audio delta per 50 ms: 20 events a second, and a barge-in has little to clear."""
LEAD_SECONDS = 0.3
"""Audio may run this far ahead of real time: a Realtime client plays from its own buffer, and
network jitter must not starve it. What runs ahead counts as heard until the client truncates."""


@dataclass(frozen=True)
class PipelineKey:
    """What the pipeline is built from; a session update that changes it needs a rebuild."""

    input_format: AudioFormat
    output_format: AudioFormat
    silence: float


def pipeline_key(config: SessionConfig) -> PipelineKey:
    return PipelineKey(config.input_format, config.output_format, config.silence)


class RealtimeCall:
    def __init__(
        self,
        session: Session,
        speech: SpeechProviders,
        stack: contextlib.AsyncExitStack,
        client_tools: frozenset[str],
        sink: AudioSink,
        on_gate: Callable[[GateEvent], None],
    ) -> None:
        self.session = session
        self.speech = speech
        self.client_tools = client_tools  # names the model calls for the client to run
        self.tools: tuple[FunctionDef, ...] = ()  # the client's tools this session was opened with
        self.gate_offset = 0.0  # input audio seconds heard by pipelines replaced since
        self._stack = stack
        self._sink = sink
        self._on_gate = on_gate
        self.transport: RealtimeTransport
        self.pipeline: ObservedPipeline
        self.key: PipelineKey

    @classmethod
    async def open(
        cls,
        hub: ConversationHub,
        agent: RealtimeAgent,
        conversation_id: str,
        connection_id: str,
        speech: SpeechProviders,
        config: SessionConfig,
        calls: ClientCalls,
        *,
        sink: AudioSink,
        on_gate: Callable[[GateEvent], None],
    ) -> RealtimeCall:
        tools = [RealtimeFunctionTool(definition, calls) for definition in config.tools]
        own = {tool.name for tool in agent.tools()}  # the agent's own tool wins a name clash
        options = SessionOptions(
            CHANNEL, connection_id=connection_id, tools=tools, on_open=_voice_delivery
        )
        stack = contextlib.AsyncExitStack()
        try:
            session = await stack.enter_async_context(
                hub.connect(agent.hosted, conversation_id, subject=None, options=options)
            )
        except BaseException:
            await stack.aclose()
            raise
        names = frozenset(tool.name for tool in tools if tool.name not in own)
        call = cls(session, speech, stack, names, sink, on_gate)
        call.tools = config.tools
        call.build(config)
        return call

    def build(self, config: SessionConfig) -> None:
        self.transport = RealtimeTransport(config.input_format, config.output_format, self._sink)
        options = VoiceOptions(
            frame_duration=FRAME_SECONDS,
            lead=LEAD_SECONDS,
            end_of_turn=SilenceEndOfTurn(config.silence),
        )
        self.pipeline = ObservedPipeline(
            self.session,
            self.transport,
            stt=self.speech.stt,
            tts=self.speech.tts,
            vad=self.speech.vad,
            options=options,
            on_gate=self._on_gate,
        )
        self.key = pipeline_key(config)

    async def rebuild(self, config: SessionConfig) -> None:
        self.gate_offset += self.pipeline.listener.gate.time
        await self.pipeline.close()
        self.build(config)

    @property
    def idle(self) -> bool:
        return self.pipeline.idle

    async def close(self) -> None:
        """Stop the pipeline, then close the session (its turns are written through)."""
        try:
            await self.pipeline.close()
        finally:
            await self._stack.aclose()


def _voice_delivery(session: Session) -> None:
    """Only audio sent counts as heard (the pipeline requires this)."""
    session.delivery.auto = False
