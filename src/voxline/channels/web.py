"""The browser channel: a `VoicePipeline` behind one WebSocket (`/web/call`).

A wire adapter only, as every channel is: the pipeline does turn taking, STT, TTS, pacing and
barge-in. This module turns frames into pipeline calls and session events into JSON events,
and puts everything the client is owed into one ordered `Outbox`, which the server drains into
the socket. One queue for audio and events keeps their order (a `clear` must reach the browser
after the frames it cancels and before the next reply's), and lets `clear()` drop the bot audio
that has not left yet, synchronously, as `AudioTransport` requires.

Over WebRTC (channels/webrtc.py) the same `WebCall` runs with another `CallAudio`: the agent's
frames go to a media track instead of the outbox, the outbox carries only events (to a data
channel), and the track reports what it sent as played.

The browser plays audio from a buffer of its own, so only it knows what was heard: it confirms
each frame's end position once played (`reports_playback = True`), and an interruption trims
the bot's turn to what actually came out of the speaker.

The agent can end the call (`end_call`): once its goodbye has played, the client gets an `end`
event, the outbox closes behind it, and `over` tells the server to close the socket. `over` is
also set when the outbox gives up on a client that stopped reading (see `Outbox`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import numpy as np
import structlog

from voxline.audio.frames import AudioFrame
from voxline.audio.resample import StreamResampler
from voxline.channels import web_protocol as wire
from voxline.channels.media_tools import until_said
from voxline.channels.outbox import BoundedOutbox
from voxline.conversation.session import Session
from voxline.conversation.state import SessionState
from voxline.conversation.turns import BotTurn, ToolCallTurn, ToolResultTurn, Turn, UserTurn
from voxline.providers.llm.base import ToolCallRequest
from voxline.providers.stt.base import PCM16
from voxline.tasks import TaskGroup
from voxline.tools.base import ToolOutcome
from voxline.voice.metrics import TurnLatency
from voxline.voice.pipeline import VoiceOptions, VoicePipeline
from voxline.voice.providers import SpeechProviders

log = structlog.get_logger("voxline.web")

Message = str | bytes
REPORTED_ERRORS = 10  # protocol errors echoed to the client per call; the rest are only counted
TOOL_RESULT_CHARS = 500  # a tool result is shown to the user, not dumped on them
FINALS_KEPT = 32  # bot turns whose final text is remembered, so it is sent once
BROWSER_OPTIONS = VoiceOptions(lead=0.1)
"""100 ms of audio in flight: enough to ride over event-loop and network jitter, little enough
that a barge-in has almost nothing to clear."""
OUTBOX_LIMIT = 128
"""Messages queued for the client: 2.5 s of 20 ms audio frames, where the paced speaker keeps
about five, so only a client that stopped reading (or a burst of events) reaches it."""
ESSENTIAL_RESERVE = 32  # slots beyond the limit for events that are never dropped
STALL_SECONDS = 5.0  # a full outbox this long without the client taking a frame ends the call
ESSENTIAL_EVENTS = frozenset({"hello", "token", "transcript", "clear", "end"})
"""Events the client cannot do without: the call's set-up (and its reconnect token), the final
text of each turn, the cut of bot audio and the end. The rest are interim or for show, and a
newer one follows (a turn's final `transcript` supersedes its `bot_text` deltas)."""


class Outbox(BoundedOutbox[Message]):
    """Messages for the client, in order, bounded (see `BoundedOutbox`): bot audio waits for
    room and is never dropped mid-speech, `ESSENTIAL_EVENTS` are never dropped, the other
    events (interim text, state, tools, metrics) give way oldest first to a slow client, and a
    client that reads nothing at all is given up on (`on_abandon` ends the call)."""

    def __init__(
        self,
        limit: int | None = None,
        *,
        on_abandon: Callable[[str], None] | None = None,
        log: Any = None,
    ) -> None:
        super().__init__(
            "browser",
            limit=OUTBOX_LIMIT if limit is None else limit,
            reserve=ESSENTIAL_RESERVE,
            stall=STALL_SECONDS,
            on_abandon=on_abandon,
            log=log,
        )

    def event(self, kind: str, /, **fields: Any) -> bool:
        """Queue an event, droppable unless it is one of `ESSENTIAL_EVENTS`."""
        return self.offer(wire.event(kind, **fields), essential=kind in ESSENTIAL_EVENTS)

    def put(self, item: Message) -> None:
        """Queue a message the client must get (never dropped; `event` for those that may
        be). Does not wait: bot audio goes through `push`, which does."""
        self.offer(item, essential=True)

    def drop_audio(self) -> int:
        """Remove every queued audio frame (events stay); returns how many went."""
        return self.remove_if(lambda item: isinstance(item, bytes))


class WebTransport:
    """`AudioTransport` for a browser: frames become binary messages in the outbox."""

    input_rate = wire.INPUT_RATE
    reports_playback = True

    def __init__(self, outbox: Outbox, output_rate: int) -> None:
        self.outbox = outbox
        self.output_rate = output_rate

    async def send(self, frame: AudioFrame) -> None:
        await self.outbox.push(wire.encode_bot_audio(frame))  # waits while the client is behind

    def clear(self) -> None:
        self.outbox.drop_audio()
        self.outbox.event("clear")


MAX_UNCONFIRMED_FRAMES = 3000
"""Frames a Realtime call remembers as sent and not yet confirmed played: a minute of audio, so
a page that stopped confirming is not remembered frame by frame for the rest of the call."""


class RealtimeWebPort:
    """`RealtimeAudioOut` for a browser (a Realtime agent's call): the model's PCM16 at 24 kHz
    becomes the page's bot-audio frames at its output rate, 20 ms each, on one timeline, and
    the page's `played` positions say how much of each item was heard, which is what a
    barge-in truncates to. Frames wait in a queue of their own, since the model's audio comes
    faster than it plays and `play` cannot wait; `write` moves them into the outbox as it
    makes room. `clear()` drops both and tells the page to stop (`clear`)."""

    def __init__(
        self,
        outbox: Outbox,
        output_rate: int,
        *,
        model_rate: int = 24000,
        frame_duration: float = 0.02,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.output_rate = output_rate
        self.on_idle = on_idle
        self._resampler = StreamResampler(model_rate, output_rate)
        self._frame = max(1, round(output_rate * frame_duration))
        self._queue: deque[bytes] = deque()
        self._queued = asyncio.Event()
        self._marks: deque[tuple[float, str, int]] = deque()  # (end, item, model bytes by then)
        self._sent: dict[str, float] = {}  # item -> model bytes made into frames
        self._played: dict[str, int] = {}  # item -> model bytes the page has played
        self._position = 0.0  # the timeline end of every frame made

    @property
    def playing(self) -> bool:
        return bool(self._marks)

    def play(self, item_id: str, audio: bytes) -> None:
        pcm = self._resampler.process(np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2"))
        if not len(pcm):
            return
        per_sample = len(audio) / len(pcm)  # model bytes each output sample stands for
        sent = self._sent.get(item_id, 0.0)
        for start in range(0, len(pcm), self._frame):
            frame = AudioFrame(pcm[start : start + self._frame], self.output_rate, self._position)
            self._position = frame.end
            sent += frame.num_samples * per_sample
            self._marks.append((frame.end, item_id, round(sent)))
            if len(self._marks) > MAX_UNCONFIRMED_FRAMES:  # a page that stopped confirming
                self._marks.popleft()
            self._queue.append(wire.encode_bot_audio(frame))
        self._sent[item_id] = sent
        self._queued.set()

    def clear(self) -> None:
        self._queue.clear()
        self._marks.clear()
        self._resampler.reset()
        self.outbox.drop_audio()
        self.outbox.event("clear")

    def played_bytes(self, item_id: str) -> int:
        return self._played.get(item_id, 0)

    def played(self, position: float) -> None:
        """The page played up to `position`; positions of frames a `clear` took back (the
        page may confirm one on its way out) match nothing any more."""
        if not self._marks or self._marks[0][0] > position + 1e-9:
            return
        while self._marks and self._marks[0][0] <= position + 1e-9:
            _, item_id, offset = self._marks.popleft()
            self._played[item_id] = max(self._played.get(item_id, 0), offset)
        if not self._marks and self.on_idle is not None:
            self.on_idle()

    async def write(self) -> None:
        """Move frames into the outbox, each waiting for room, until cancelled (a frame a
        `clear` discards while it waits is not sent: the outbox sees to it)."""
        while True:
            while not self._queue:
                self._queued.clear()
                await self._queued.wait()
            await self.outbox.push(self._queue.popleft())


class CallAudio(Protocol):
    """Where a browser call's audio travels: `WebTransport` (binary frames in the outbox, the
    socket door) or `RtcTransport` (media tracks, channels/webrtc.py). The pipeline needs no
    more than an `AudioTransport`; the page's `hello` announces these rates."""

    input_rate: int
    output_rate: int
    reports_playback: bool

    async def send(self, frame: AudioFrame) -> None: ...

    def clear(self) -> None: ...


class WebCall:
    """One browser call on a started session: `start`, then feed it frames with `handle_text`
    and `handle_audio` (or `handle_pcm`) while draining `outbox`, then `finish` (before the
    session closes). `audio` chooses the transport: by default the socket's."""

    def __init__(
        self,
        session: Session,
        speech: SpeechProviders,
        *,
        output_rate: int,
        options: VoiceOptions = BROWSER_OPTIONS,
        audio: Callable[[Outbox], CallAudio] | None = None,
    ) -> None:
        self._call_state(session)
        self.transport: CallAudio = (
            WebTransport(self.outbox, output_rate) if audio is None else audio(self.outbox)
        )
        self.pipeline = VoicePipeline(
            session, self.transport, stt=speech.stt, tts=speech.tts, vad=speech.vad, options=options
        )
        self.pipeline.listener.on_words = self._on_words
        self._unsubscribe = self._listen(session)

    def _call_state(self, session: Session) -> None:
        """What every browser call has, whatever speaks for it (the Realtime call, which has no
        cascaded pipeline, sets itself up with this too)."""
        self.session = session
        self.over = asyncio.Event()  # the call is over: the server closes the socket
        self.log = log.bind(session_id=session.id)
        self.outbox = Outbox(on_abandon=lambda reason: self.over.set(), log=self.log)
        self.protocol_errors = 0
        self._ending = False
        self._final: dict[str, tuple[str, bool]] = {}  # bot turn id -> the final text sent
        self._written: dict[str, str] = {}  # bot turn id -> all the model wrote (see `full_text`)
        self._tasks = TaskGroup("browser call")

    def _listen(self, session: Session) -> list[Callable[[], None]]:
        """What the page is told of the session (the Realtime call listens the same way)."""
        return [
            session.on("turn_added", self._on_turn_added),
            session.on("turn_updated", self._on_turn_updated),
            session.on("turn_deleted", self._on_turn_deleted),
            session.on("bot_text_delta", self._on_delta),
            session.on("tool_started", self._on_tool_started),
            session.on("tool_finished", self._on_tool_finished),
            session.on("state_changed", self._on_state),
            session.on("metrics", self._on_metrics),
            session.on("error", self._on_error),
        ]

    async def start(self, *, agent: str, greeting: str | None) -> None:
        """Announce the call, replay a resumed conversation's history, greet a new one."""
        resumed = len(self.session.turns) > 0
        self._send(
            "hello",
            input_rate=self.transport.input_rate,
            output_rate=self.transport.output_rate,
            frame_ms=round(self.pipeline.options.frame_duration * 1000),
            agent=agent,
            conversation_id=self.session.id,
            resumed=resumed,
        )
        for turn in self.session.turns:
            if isinstance(turn, UserTurn | BotTurn) and turn.content:
                self._send_transcript(turn)
            elif isinstance(turn, ToolCallTurn):  # a reloaded page shows its tool calls too
                self._send(
                    "tool",
                    call_id=turn.call_id,
                    name=turn.name,
                    arguments=turn.arguments,
                    status="started",
                )
            elif isinstance(turn, ToolResultTurn):
                status = "error" if turn.is_error else "finished"
                self._send(
                    "tool",
                    call_id=turn.call_id,
                    name=turn.name,
                    status=status,
                    result=turn.content[:TOOL_RESULT_CHARS],
                )
        self._send("state", state=self.session.state.value)
        if greeting and not resumed:
            await self.session.say(greeting)

    # -- from the client ---------------------------------------------------------------------
    def handle_text(self, frame: str) -> None:
        try:
            message = wire.parse_text_frame(frame)
        except wire.WebProtocolError as exc:
            self._refuse(exc)
            return
        if isinstance(message, wire.Played):
            self._played(message.position)
        elif not self._ending:
            self._typed(message.text)

    def inject(self, text: str, *, as_system: bool = False) -> None:
        """Text from outside the call (an operator over the API): answered aloud like the
        caller's own words, or, `as_system`, an instruction acted on at once. Not once the
        call is ending."""
        if not self._ending:
            self._injected(text, as_system)

    def handle_audio(self, frame: bytes) -> None:
        try:
            pcm = wire.parse_audio_frame(frame)
        except wire.WebProtocolError as exc:
            self._refuse(exc)
            return
        if not self._ending:  # the goodbye is not for barging in on
            self._heard(pcm)

    def handle_pcm(self, pcm: PCM16) -> None:
        """Caller audio already decoded at the transport's input rate (a WebRTC track)."""
        if not self._ending:
            self._heard(pcm)

    # What speaks for the call (the cascaded pipeline here; a Realtime model in
    # `RealtimeWebCall`) gets the client's frames through these four.
    def _played(self, position: float) -> None:
        self.pipeline.played(position)

    def _typed(self, text: str) -> None:
        self._spawn(self.session.send_text(text))

    def _injected(self, text: str, as_system: bool) -> None:
        self.pipeline.cut_off()
        self._spawn(self.session.injected(text, as_system=as_system))

    def _heard(self, pcm: PCM16) -> None:
        self.pipeline.push_audio(pcm)

    def _refuse(self, error: wire.WebProtocolError) -> None:
        self.protocol_errors += 1
        if self.protocol_errors <= REPORTED_ERRORS:
            self.log.warning("client frame ignored", error=str(error))
            self._send("error", message=f"ignored: {error}")

    # -- the end -----------------------------------------------------------------------------
    def request_end(self, reason: str) -> None:
        """The agent ends the call: once its goodbye has played, tell the client (`end`) and
        let the server close the socket."""
        if not self._ending:
            self._ending = True
            self.log.info("the agent ends the call", reason=reason)
            self._spawn(self._end(reason))

    async def _end(self, reason: str) -> None:
        await until_said(self.pipeline)
        self._send("end", reason=reason)
        self.outbox.close()
        self.over.set()

    async def finish(self) -> None:
        """Stop listening and speaking; what was said stays in the session's turns."""
        for off in self._unsubscribe:
            off()
        await self._tasks.close()
        await self.pipeline.close()
        if self.protocol_errors > REPORTED_ERRORS:
            self.log.warning("client frames ignored in total", count=self.protocol_errors)

    # -- session events to the client --------------------------------------------------------
    def _send(self, kind: str, /, **fields: Any) -> None:
        self.outbox.event(kind, **fields)

    def _send_transcript(self, turn: UserTurn | BotTurn) -> None:
        role = "user" if isinstance(turn, UserTurn) else "bot"
        interrupted = isinstance(turn, BotTurn) and turn.interrupted
        extra = self._full_text(turn.id, turn.content) if interrupted else {}
        self._send(
            "transcript",
            role=role,
            turn_id=turn.id,
            text=turn.content,
            interrupted=interrupted,
            **extra,
        )

    def _full_text(self, turn_id: str, heard: str) -> dict[str, str]:
        """`full_text` for an interrupted turn: everything the model wrote, heard or not, so
        the page can show the unheard rest struck out (the stored turn keeps only the heard
        part, so a resumed call has none)."""
        written = self._written.get(turn_id, "")
        return {"full_text": written} if len(written) > len(heard) else {}

    def _on_turn_added(self, turn: Turn) -> None:
        if isinstance(turn, UserTurn):
            self._send_transcript(turn)

    def _on_turn_updated(self, turn: Turn) -> None:
        """A bot turn's final text: when it completes, and again when an interruption trims it
        (deltas for a turn never follow its final text: see `_on_delta`)."""
        if not isinstance(turn, BotTurn) or not (turn.complete or turn.interrupted):
            return
        final = (turn.content, turn.interrupted)
        if self._final.get(turn.id) != final:
            self._remember_final(turn.id, final)
            self._send_transcript(turn)

    def _on_turn_deleted(self, turn: Turn) -> None:
        if isinstance(turn, BotTurn):  # interrupted before a word was heard
            self._remember_final(turn.id, ("", True))
            self._send(
                "transcript",
                role="bot",
                turn_id=turn.id,
                text="",
                interrupted=True,
                **self._full_text(turn.id, ""),
            )

    def _remember_final(self, turn_id: str, final: tuple[str, bool]) -> None:
        """Only the latest turns can still change (a trim touches the reply just cut), so the
        oldest are forgotten past `FINALS_KEPT` rather than holding every word of the call."""
        self._final.pop(turn_id, None)
        self._final[turn_id] = final
        while len(self._final) > FINALS_KEPT:
            del self._final[next(iter(self._final))]

    def _on_delta(self, turn: BotTurn, delta: str) -> None:
        self._written[turn.id] = self._written.pop(turn.id, "") + delta
        while len(self._written) > FINALS_KEPT:
            del self._written[next(iter(self._written))]
        if turn.id not in self._final:  # `say` completes its turn before emitting the delta
            self._send("bot_text", turn_id=turn.id, delta=delta)

    def _on_tool_started(self, call: ToolCallRequest, **_: Any) -> None:
        self._send(
            "tool", call_id=call.id, name=call.name, arguments=call.arguments, status="started"
        )

    def _on_tool_finished(self, call: ToolCallRequest, outcome: ToolOutcome, **_: Any) -> None:
        if outcome.approval_id:
            status = "pending_approval"
        else:
            status = "error" if outcome.is_error else "finished"
        self._send(
            "tool",
            call_id=call.id,
            name=call.name,
            status=status,
            result=outcome.content[:TOOL_RESULT_CHARS],
        )

    def _on_words(self, text: str) -> None:
        """The caller's words so far, while they still speak (the page's pending bubble); a
        late one, after the turn ended, would land after its final transcript, so it is not
        sent."""
        if self.pipeline.listener.user_speaking:
            self._send("interim", text=text)

    def _on_state(self, new: SessionState, **_: Any) -> None:
        self._send("state", state=new.value)

    def _on_metrics(self, kind: str, metrics: object) -> None:
        if kind == "turn" and isinstance(metrics, TurnLatency):
            self._send("metrics", kind="turn", turn_id=metrics.turn_id, **metrics.milliseconds())

    def _on_error(self, error: BaseException, where: str) -> None:
        self._send("error", message=f"the agent hit a problem ({where}); see the server log")

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        if self._tasks.closed:  # the call is over: nothing new starts
            work.close()
            return
        self._tasks.spawn(work)
