"""`VoicePipeline`: a Session spoken to through an audio transport.

    session = Session(agent, channel="voice", auto_deliver=False)
    pipeline = VoicePipeline(session, transport, stt=stt, tts=tts, vad=vad)
    await session.start()          # the greeting is spoken: the pipeline already listens
    transport calls pipeline.push_audio(pcm) per frame (and pipeline.played(pos) if it can)
    ...
    summary = await pipeline.close()
    await session.close()

Inbound, the `Listener` turns frames into turn events inline; a finished turn is transcribed and
sent with `session.send_text`. Outbound, the `Speaker` speaks the session's bot text. Between
them sits barge-in, designed against its two failure modes:

- False interruptions: speech shorter than `min_speech` never reaches here. Confirmed speech
  during bot speech only *pauses* the bot (the queue is kept) while what the caller said is
  transcribed; only real words (not a backchannel, at least `min_interruption_words`, after
  `min_interruption_duration`) commit. Otherwise the bot resumes where it paused.
- Bots that talk on: a commit clears the channel's queue in the same call (within a frame),
  cancels TTS and the LLM, and trims the bot turn to the words played.

A user pause shorter than the end-of-turn silence never splits a turn (the gate decides), and
the bot never starts talking over a caller who is mid-sentence: a reply that starts while the
caller speaks waits paused, like a barge-in candidate.

With a streaming recognizer the barge-in is judged on its live words (interim ones included) at
every speech chunk, with no transcription to wait for; the agent's `turn.end_of_turn =
"provider"` lets the recognizer's own end-of-turn signal end the caller's turn; and a failing
recognizer (a dropped stream, a fall-over to the next provider) is reported as an `error` event
(`where="stt"`) and a log line, so a caller left unanswered is never unexplained.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import structlog

from voxline.audio.clock import Clock, MonotonicClock
from voxline.audio.end_of_turn import EndOfTurnStrategy, strategy_named
from voxline.audio.turn_taking import (
    GateEvent,
    SpeechChunk,
    SpeechEnded,
    SpeechStarted,
    TurnOptions,
)
from voxline.conversation.session import Session
from voxline.conversation.speculation import SpeculativeReply
from voxline.conversation.state import SessionState
from voxline.conversation.turns import BotTurn, Turn, UserTurn
from voxline.providers.stt.base import PCM16, STT, Transcript
from voxline.providers.tts.base import TTS
from voxline.providers.vad.base import VAD
from voxline.tasks import TaskGroup
from voxline.telemetry import counters
from voxline.voice.interruption import InterruptionPolicy, Verdict
from voxline.voice.listener import Listener
from voxline.voice.metrics import LatencySummary, TurnLatency, summarize
from voxline.voice.recorder import close_recording, record_call, record_input
from voxline.voice.speaker import Speaker
from voxline.voice.speculation import Speculator
from voxline.voice.transport import AudioTransport

S = SessionState
_BOT_BUSY = frozenset({S.THINKING, S.CALLING_TOOLS, S.SPEAKING})
MAX_DEFERRED = 8
"""Caller utterances held for an answer while the bot cannot be interrupted; past it the oldest
is dropped (logged): one answer to a caller's last few sentences is what they are waiting for."""
MAX_LATENCIES = 1000
"""Turns whose latencies are kept for the session summary: the summary covers the latest ones."""


@dataclass(frozen=True)
class VoiceOptions:
    """Pipeline tuning that is about the deployment, not the agent (the agent's turn settings
    come from `AgentSpec.turn`)."""

    frame_duration: float = 0.02
    """Outbound frame length in seconds."""
    lead: float = 0.0
    """Seconds outbound audio may run ahead of real time: a jitter buffer for channels with a
    network between (0.1-0.2 for telephony); 0 for a local sound card."""
    prefetch_after: float = 0.2
    """Trailing silence after which the speech so far is transcribed, ahead of the turn end."""
    recheck_every: float = 0.3
    """While a possible barge-in is being judged, re-transcribe after this much more speech."""
    tts_queue: int = 4
    """TTS chunks synthesised ahead of playback (bounded: a cancelled reply wastes little)."""
    end_of_turn: EndOfTurnStrategy | None = None
    """The end-of-turn strategy; None: silence-based with the agent's end_of_turn_silence."""
    speculate: bool = True
    """Start the model on the transcript made at a pause, during the end-of-turn wait, and keep
    its reply if the turn's final words match (`voxline.voice.speculation`). A wrong guess costs
    model time only; turn it off where model time is scarcer than latency."""
    first_chunk_words: int | None = 4
    """Speak a reply's first words as soon as a clause, or a phrase of about this many words,
    is complete, instead of waiting for the first whole sentence (`SentenceChunker`); None:
    whole sentences from the start."""


@dataclass(eq=False)
class _BargeIn:
    """Caller speech heard while the bot is busy, not yet judged."""

    started: float  # audio time the caller's speech began
    checked: float = 0.0  # seconds of speech the last check covered
    checking: bool = False
    committed: bool = False


class VoicePipeline:
    """Attach a Session to an `AudioTransport`; see the module doc for the life cycle."""

    def __init__(
        self,
        session: Session,
        transport: AudioTransport,
        *,
        stt: STT,
        tts: TTS,
        vad: VAD,
        clock: Clock | None = None,
        options: VoiceOptions | None = None,
    ) -> None:
        if session.delivery.auto:
            raise ValueError(
                "a voice session must be created with auto_deliver=False: only played audio "
                "counts as heard"
            )
        self.session = session
        self.clock: Clock = clock or MonotonicClock()
        transport = record_call(session, transport, self.clock)  # wrapped when the agent records
        self.transport = transport
        self.options = options or VoiceOptions()
        turn = session.spec.turn
        self.policy = InterruptionPolicy(turn)
        language = session.spec.language.split("-")[0].lower() or None
        self.listener = Listener(
            vad,
            stt,
            input_rate=transport.input_rate,
            options=TurnOptions(
                end_of_turn_silence=turn.end_of_turn_silence,
                min_speech=turn.min_speech,
                pre_roll=turn.pre_roll,
            ),
            end_of_turn=self.options.end_of_turn or strategy_named(turn.end_of_turn, turn),
            prefetch_after=self.options.prefetch_after,
            language=language,
            provider_end_of_turn=turn.end_of_turn == "provider",
            on_stt_error=self._on_stt_error,
            on_events=self._handle,  # events a batching VAD completes a loop turn later
        )
        self.speculator = Speculator(session, self.listener)
        if self.options.speculate:
            self.listener.on_early_transcript = self._on_early_transcript
        self.speaker = Speaker(
            tts,
            transport,
            session.delivery,
            clock=self.clock,
            voice=session.spec.voice,
            frame_duration=self.options.frame_duration,
            lead=self.options.lead,
            queue_size=self.options.tts_queue,
            on_audio=self._on_tts_audio,
            on_play=self._on_play,
            on_idle=self._on_idle,
            on_error=lambda exc: session.bus.emit("error", error=exc, where="tts"),
            first_chunk_words=self.options.first_chunk_words,
        )
        self.latencies: deque[TurnLatency] = deque(maxlen=MAX_LATENCIES)
        self.log = structlog.get_logger("voxline.voice").bind(session_id=session.id)
        self._barge: _BargeIn | None = None
        self._probe: TurnLatency | None = None
        self._deferred: deque[str] = deque()
        self.deferred_dropped = 0
        self._reply: asyncio.Task[None] | None = None
        self._tasks = TaskGroup("voice pipeline")
        self._summary: LatencySummary | None = None
        self._unsubscribe = [
            session.on("bot_text_delta", self._on_delta),
            session.on("tool_started", self._on_tool_started),
            session.on("reply_finished", self._on_reply_finished),
            session.on("interrupted", self._on_interrupted),
            session.on("turn_added", self._on_turn_added),
        ]

    # -- what a transport calls --------------------------------------------------------------
    def push_audio(self, pcm: PCM16, *, mulaw: bytes | None = None) -> None:
        """One inbound frame of mono PCM16 at `transport.input_rate` (the hot path: inline,
        no task or queue per frame). A channel that received µ-law passes those bytes too, so a
        streaming recognizer that takes µ-law gets the caller's audio untouched."""
        record_input(self.transport, pcm)
        events = self.listener.push(pcm, mulaw)
        if events:
            self._handle(events)

    def played(self, position: float) -> None:
        """The far end has played the output timeline up to `position` (a frame's `end`)."""
        self.speaker.played(position)

    def end_input(self) -> None:
        """The caller's audio stopped (hang-up, end of file): a turn in progress ends now."""
        self._handle(self.listener.flush())

    # -- state for drivers -------------------------------------------------------------------
    @property
    def bot_active(self) -> bool:
        """A reply is being made or spoken."""
        return (
            self.speaker.active
            or (self._reply is not None and not self._reply.done())
            or self.session.state in _BOT_BUSY
        )

    @property
    def busy(self) -> bool:
        """Model work (STT, LLM, tools, TTS) is running. A driver on virtual time waits for
        this to clear before moving the clock, so model time does not pass on the timeline."""
        return bool(
            self.listener.busy
            or self.speaker.busy
            or (self._reply is not None and not self._reply.done())
            or len(self._tasks) > 0
        )

    @property
    def idle(self) -> bool:
        """Nothing is being said or prepared, and nothing waits to be answered."""
        return not (self.bot_active or self.busy or self._deferred or self.listener.user_speaking)

    async def close(self) -> LatencySummary:
        """Stop speaking and listening, and summarise the session's latencies (logged, and
        emitted as `metrics(kind="voice_session")`). Call before `session.close()`."""
        if self._summary is not None:
            return self._summary
        await close_recording(self.transport)
        for off in self._unsubscribe:
            off()
        self.speculator.drop("the call is closing")
        await self.listener.aclose()
        await self._tasks.close()
        self.transport.clear()
        self.speaker.stop()
        await self.speaker.close()
        self._retire_probe()
        summary = self._summary = summarize(list(self.latencies))
        self.session.bus.emit("metrics", kind="voice_session", metrics=summary)
        self.log.info(
            "voice session latency",
            turns=summary.turns,
            underruns=self.speaker.underruns,
            speculative_replies=self.speculator.started,
            speculative_kept=self.speculator.kept,
            **summary.milliseconds(),
        )
        return summary

    # -- inbound -----------------------------------------------------------------------------
    def _handle(self, events: Sequence[GateEvent]) -> None:
        for event in events:
            if isinstance(event, SpeechChunk):
                self.speculator.check()
                if self._barge is not None:
                    self._check_barge_in(self._barge)
            elif isinstance(event, SpeechStarted):
                self.speculator.drop("a new turn began")
                if self.bot_active and self.policy.interruptible:
                    self._open_barge_in(event.t)
            elif isinstance(event, SpeechEnded):
                self._on_speech_ended(event)

    def _open_barge_in(self, started: float) -> None:
        self._barge = _BargeIn(started)
        self.speaker.pause()
        self.log.debug("possible interruption: bot paused", at=started)

    def _check_barge_in(self, barge: _BargeIn) -> None:
        spoken = self.listener.gate.time - barge.started
        live = self.listener.live_text()
        if live is not None:  # a stream's words so far: judged now, nothing to transcribe
            if not barge.committed and self.policy.judge(live, spoken) is Verdict.INTERRUPT:
                self._commit(barge, live)
            return
        if (
            barge.checking
            or barge.committed
            or spoken < self.policy.min_duration
            or (barge.checked and spoken - barge.checked < self.options.recheck_every)
        ):
            return
        barge.checking, barge.checked = True, spoken
        transcription = self.listener.transcribe(self.listener.speech_so_far())
        self._spawn(self._judge_barge_in(barge, transcription, spoken))

    async def _judge_barge_in(
        self, barge: _BargeIn, transcription: Awaitable[Transcript], spoken: float
    ) -> None:
        try:
            text = (await transcription).text
        finally:
            barge.checking = False
        if barge.committed or self.policy.judge(text, spoken) is not Verdict.INTERRUPT:
            return
        self._commit(barge, text)

    def _commit(self, barge: _BargeIn, text: str) -> None:
        barge.committed = True
        self.transport.clear()
        heard = self.speaker.stop()
        self.session.interrupt()
        self.log.info("barge-in", said=text, heard=heard)

    def _on_speech_ended(self, ended: SpeechEnded) -> None:
        now = self.clock.now()
        probe = TurnLatency(speech_end=now - (ended.t - ended.speech_end))
        probe.reach("end_of_turn", now)
        barge, self._barge = self._barge, None
        transcription = self.listener.final_transcript(ended)
        if self.session.state is S.LISTENING:
            self.session.set_state(S.TRANSCRIBING)
        self._spawn(
            self._on_utterance(transcription, ended.speech_end - ended.started, barge, probe)
        )

    async def _on_utterance(
        self,
        transcription: Awaitable[Transcript],
        spoken: float,
        barge: _BargeIn | None,
        probe: TurnLatency,
    ) -> None:
        try:
            text = (await transcription).text.strip()
        except Exception as exc:
            self.log.exception("transcription failed")
            self.session.bus.emit("error", error=exc, where="stt")
            text = ""
        probe.reach("transcript", self.clock.now())
        probe.text = text
        if barge is not None or not text or self.bot_active:
            self.speculator.drop("the turn is not answered now")
        if barge is not None and not barge.committed:
            verdict = self.policy.judge(text, spoken)
            if verdict is Verdict.INTERRUPT:
                self._commit(barge, text)
            else:
                self.speaker.resume()
                self.session.bus.emit("barge_in_resumed", heard=text, verdict=verdict.value)
                self._settle_transcribing()
                if verdict is Verdict.DEFER:
                    self._defer(text)
                return
        elif barge is None and self.bot_active and text:
            # Not interruptible (or the bot started mid-utterance): answer once it is done.
            if self.policy.judge(text, spoken) is not Verdict.IGNORE:
                self._defer(text)
            self._settle_transcribing()
            return
        if not text:
            self._settle_transcribing()
            return
        self._respond(text, probe, self.speculator.take(text))

    def _on_early_transcript(self, pause_id: int, text: str) -> None:
        """The caller paused and their words so far are known: guess the reply now, unless the
        turn will not be answered at once (the bot is busy, a barge-in is being judged, earlier
        words wait to be answered together)."""
        if self.bot_active or self._barge is not None or self._deferred or self._tasks.closed:
            return
        self.speculator.start(pause_id, text)

    def _on_stt_error(self, error: Exception, message: str) -> None:
        self.log.error(message, error=str(error) or type(error).__name__)
        self.session.bus.emit("error", error=error, where="stt")

    def _settle_transcribing(self) -> None:
        if self.session.state is S.TRANSCRIBING:
            self.session.set_state(S.LISTENING)

    def _defer(self, text: str) -> None:
        if len(self._deferred) >= MAX_DEFERRED:
            self._deferred.popleft()
            self.deferred_dropped += 1
            counters.dropped("deferred caller answers")
            self.log.warning(
                "too many answers deferred: the oldest dropped", total=self.deferred_dropped
            )
        self._deferred.append(text)
        self.log.info("answer deferred until the bot is done", said=text)
        self._on_idle()

    # -- replies -----------------------------------------------------------------------------
    def _respond(
        self, text: str, probe: TurnLatency | None, guess: SpeculativeReply | None = None
    ) -> None:
        self._retire_probe()
        self._probe = probe
        if self.listener.user_speaking and self._barge is None and self.policy.interruptible:
            # The caller started again before this reply: hold its audio until they are judged.
            self._open_barge_in(self.listener.started or self.listener.gate.time)
        reply = asyncio.create_task(self._send(text, guess))
        self._reply = reply

    async def _send(self, text: str, guess: SpeculativeReply | None = None) -> None:
        try:
            await self.session.send_text(text, speculation=guess)
        except Exception as exc:
            self.log.exception("reply failed")
            self.session.bus.emit("error", error=exc, where="voice reply")
        finally:
            if guess is not None:
                guess.cancel()  # never sent (the reply was cancelled before it began)
            self._on_idle()

    def _on_idle(self) -> None:
        if not self._deferred or self._barge is not None or self.listener.user_speaking:
            return
        reply = self._reply
        replying = reply is not None and not reply.done() and reply is not asyncio.current_task()
        if replying or self.speaker.active or self.session.state in _BOT_BUSY:
            return
        text = " ".join(self._deferred)
        self._deferred.clear()
        self._respond(text, None)

    # -- session events ----------------------------------------------------------------------
    def _on_delta(self, turn: BotTurn, delta: str) -> None:
        self._reach("llm_first_token")
        self.speaker.text(turn, delta)

    def _on_tool_started(self, **_: object) -> None:
        self._reach("llm_first_token")
        self.speaker.end_turn()

    def _on_reply_finished(self, turn: BotTurn | None) -> None:
        self.speaker.end_turn()

    def _on_interrupted(self, turn: BotTurn | None) -> None:
        self.cut_off()  # interrupted from elsewhere (text, API): silence the bot too

    def cut_off(self) -> None:
        """Silence the bot now (a key press, injected text): the far end drops what it has
        queued, and what was played is recorded as heard before the session settles."""
        if self.speaker.active:
            self.transport.clear()
            self.speaker.stop()

    def _on_turn_added(self, turn: Turn) -> None:
        probe = self._probe
        if isinstance(turn, UserTurn) and probe is not None and probe.turn_id is None:
            probe.turn_id = turn.id

    # -- latency -----------------------------------------------------------------------------
    def _reach(self, stage: str) -> None:
        if self._probe is not None:
            self._probe.reach(stage, self.clock.now())

    def _on_tts_audio(self) -> None:
        self._reach("first_audio")

    def _on_play(self) -> None:
        probe = self._probe
        if probe is not None and probe.reach("voice_to_voice", self.clock.now()):
            self._retire_probe()

    def _retire_probe(self) -> None:
        """Record the current turn's latency, complete or not (interrupted, no audio)."""
        probe, self._probe = self._probe, None
        if probe is None:
            return
        self.latencies.append(probe)
        self.session.bus.emit("metrics", kind="turn", metrics=probe)
        self.log.info("turn latency", turn_id=probe.turn_id, **probe.milliseconds())

    def _spawn(self, coro: Awaitable[None]) -> None:
        if not self._tasks.closed:  # after close() nothing new starts
            self._tasks.spawn(coro)
