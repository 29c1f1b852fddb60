"""A browser call to an agent whose `llm` is a Realtime model (speech to speech).

The page and its protocol are the cascaded call's (`channels/web.py`, docs/browser.md): caller
audio in as PCM16 at 16 kHz, bot audio out as timeline-stamped frames at the page's output rate,
`played` confirmations, the same JSON events. Only what is behind the socket differs: instead
of the `VoicePipeline`, a `RealtimeVoiceEngine` hears and speaks, in PCM16 at 24 kHz (the
Realtime default). The caller's audio is resampled once on its way in (one soxr stream for the
call) and the model's on its way out (`RealtimeWebPort`), and the page's `played` positions are
what a barge-in truncates the model's item to, as Twilio's marks are on the phone.

What the session says still reaches the page through `WebCall`'s handlers (transcripts, text
deltas, tools, state, latency), so this is `WebCall` with the pipeline swapped for the engine;
the caller's transcript arrives after its turn was added here (the server transcribes it), so
it is sent when the turn is filled in.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from voxline.audio.resample import StreamResampler
from voxline.channels import web_protocol as wire
from voxline.channels.media_tools import GOODBYE_LIMIT
from voxline.channels.web import REPORTED_ERRORS, RealtimeWebPort, WebCall
from voxline.conversation.session import Session
from voxline.conversation.turns import BotTurn, Turn, UserTurn
from voxline.providers.realtime.config import PCM24
from voxline.providers.stt.base import PCM16
from voxline.voice.realtime import RealtimeVoiceEngine

log = structlog.get_logger("voxline.web")

FRAME_MS = 20  # the page's frames, both ways


class RealtimeWebCall(WebCall):
    """One browser call on a Realtime model; used like `WebCall` (`start`, the `handle_*`
    feeds while the server drains `outbox`, `finish`). `start` raises `RealtimeConnectError`
    when the model cannot be reached."""

    def __init__(self, session: Session, spec: str, *, output_rate: int) -> None:
        # Not `WebCall.__init__`: that builds the cascaded pipeline; the state every browser
        # call's handlers use comes from `_call_state`.
        self._call_state(session)
        self.port = RealtimeWebPort(self.outbox, output_rate, model_rate=PCM24.rate)
        self.engine = RealtimeVoiceEngine(
            session, spec, self.port, audio=PCM24, on_failed=self.over.set
        )
        self.port.on_idle = self.engine.playback_finished
        self._inbound = StreamResampler(wire.INPUT_RATE, PCM24.rate)
        self._writer: asyncio.Task[None] | None = None
        self._unsubscribe = self._listen(session)

    async def start(self, *, agent: str, greeting: str | None) -> None:
        """Connect the model (seeded with a resumed conversation), announce the call, replay
        the history, and have the model greet a new caller."""
        await self.engine.start()
        self._writer = asyncio.create_task(self.port.write(), name="browser audio")
        resumed = len(self.session.turns) > 0
        self._send(
            "hello",
            input_rate=wire.INPUT_RATE,
            output_rate=self.port.output_rate,
            frame_ms=FRAME_MS,
            agent=agent,
            conversation_id=self.session.id,
            resumed=resumed,
        )
        for turn in self.session.turns:
            if isinstance(turn, UserTurn | BotTurn) and turn.content:
                self._send_transcript(turn)
        self._send("state", state=self.session.state.value)
        if greeting and not resumed:
            self.engine.greet(greeting)

    # -- from the client (see `WebCall.handle_text`) ------------------------------------------
    def _played(self, position: float) -> None:
        self.port.played(position)

    def _typed(self, text: str) -> None:
        self.engine.say_as_user(text)

    def _injected(self, text: str, as_system: bool) -> None:
        if as_system:
            self.engine.instruct(text)
        else:
            self.engine.say_as_user(text)

    def _heard(self, pcm: PCM16) -> None:
        audio = self._inbound.process(pcm)
        if len(audio):
            self.engine.push_audio(audio.astype("<i2", copy=False).tobytes())

    # -- the end -----------------------------------------------------------------------------
    async def _end(self, reason: str) -> None:
        """After the goodbye (the tool's own response and its audio, all played)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GOODBYE_LIMIT):
                while self.engine.bot_active:  # noqa: ASYNC110 (several conditions, no one event)
                    await asyncio.sleep(0.05)
        self._send("end", reason=reason)
        self.outbox.close()
        self.over.set()

    async def finish(self) -> None:
        """Close the model's socket; the answer in flight ends as interrupted, keeping what
        was said."""
        for off in self._unsubscribe:
            off()
        await self._tasks.close()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self.engine.close()
        if self.protocol_errors > REPORTED_ERRORS:
            self.log.warning("client frames ignored in total", count=self.protocol_errors)

    # -- session events to the client --------------------------------------------------------
    def _on_turn_added(self, turn: Turn) -> None:
        if isinstance(turn, UserTurn) and turn.content:  # typed, or injected
            self._send_transcript(turn)

    def _on_turn_updated(self, turn: Turn) -> None:
        if isinstance(turn, UserTurn):
            if turn.final and turn.content:  # the server's transcript of the caller
                self._send_transcript(turn)
            return
        super()._on_turn_updated(turn)
