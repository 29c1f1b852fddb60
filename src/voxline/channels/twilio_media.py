"""A Twilio Media Streams call bound to a `Session`: voxline does speech, on 8 kHz mu-law.

`MediaStreamTransport` is the `AudioTransport` over one stream: outbound frames become `media`
messages, each followed by a `mark` whose echo is Twilio's word that the frame has played, and
`clear` drops what Twilio has buffered. `MediaCall` wires it to a `VoicePipeline` and turns the
other inbound events into session calls (a key press is a DTMF turn the agent answers).

A stream cannot end or transfer its call, so `MediaCall` does that over Twilio's REST API
(`TwilioCalls`) once the goodbye has played, and then sets `over`: the server closes the stream
from our side, which alone ends the call when no REST client is configured (nothing follows
`<Connect>` in our TwiML).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from voxline.audio.codecs import mulaw_decode, mulaw_encode
from voxline.audio.frames import AudioFrame
from voxline.channels import media_protocol as wire
from voxline.channels.media_tools import until_said
from voxline.channels.outbox import BoundedOutbox, DropCount
from voxline.channels.twilio_calls import TwilioCalls, hang_up, transfer
from voxline.channels.twilio_relay import RETURNING_CALLER_NOTE
from voxline.conversation.session import Session
from voxline.tasks import TaskGroup
from voxline.voice.pipeline import VoiceOptions, VoicePipeline
from voxline.voice.providers import SpeechProviders

TWILIO_LEAD = 0.1
"""Seconds of audio sent ahead of real time, so network jitter does not starve Twilio's player;
everything ahead is what a barge-in `clear` throws away."""
OUTBOX_SECONDS = 2.0
"""Audio the outbox may hold beyond what the socket took: far more than the paced speaker ever
leaves there (`TWILIO_LEAD`), so only a socket that stopped draining fills it."""
STALL_SECONDS = 5.0
"""How long a full outbox waits for the socket to take a frame before the call is ended."""
PENDING_MARKS_SECONDS = 60.0
"""Audio whose marks are remembered until echoed; Twilio echoes within a lead's time, so more
means echoes stopped coming and the oldest marks are forgotten."""
MARK_PREFIX = "vx-"

# Ends or hands over the call; returns None when done, else a note for the agent on why not.
_EndAction = Callable[[], Awaitable[str | None]]


class MediaStreamTransport:
    """The voice pipeline's `AudioTransport` on one Media Stream.

    Every frame gets its own mark. Twilio buffers what it is sent, so only echoes say what the
    caller heard, and the pipeline must see the last frame of each stretch confirmed to know the
    bot has stopped talking; a mark per frame gives both, to the frame, for one small message
    each way. Messages leave through one bounded outbox and one writer (`write`) in the order
    they were made, so `clear` can take back everything not yet written before it goes out
    itself. A frame and its mark are one outbox item, so they never part.

    Bounded: the outbox holds `OUTBOX_SECONDS` of audio; beyond that `send` waits (the speaker
    is paced, so a healthy socket never fills it), and a socket that takes nothing for
    `STALL_SECONDS` more means Twilio is gone: the outbox gives up and `on_abandon` ends the
    call. Pending marks are remembered for `PENDING_MARKS_SECONDS` of audio; older ones are
    forgotten (counted): a later echo confirms them anyway.
    """

    input_rate = wire.MULAW_RATE
    output_rate = wire.MULAW_RATE
    reports_playback = True

    def __init__(
        self,
        stream_sid: str,
        *,
        frame_duration: float = 0.02,
        on_abandon: Callable[[str], None] | None = None,
        log: Any = None,
    ) -> None:
        self.stream_sid = stream_sid
        log = log or structlog.get_logger("voxline.twilio.media").bind(stream_sid=stream_sid)
        self.outbox: BoundedOutbox[tuple[str, ...]] = BoundedOutbox(
            "media stream",
            limit=math.ceil(OUTBOX_SECONDS / frame_duration),
            reserve=1,  # `clear` empties the outbox first, so one slot always suffices
            stall=STALL_SECONDS,
            on_abandon=on_abandon,
            log=log,
        )
        self._marks: deque[tuple[str, float]] = deque()  # sent, not yet echoed, in order
        self._max_marks = math.ceil(PENDING_MARKS_SECONDS / frame_duration)
        self.marks_forgotten = DropCount(
            log, "marks never echoed: the oldest forgotten", source="media stream marks"
        )
        self._count = 0
        self._closed = False

    async def send(self, frame: AudioFrame) -> None:
        if self._closed:
            return
        self._count += 1
        name = f"{MARK_PREFIX}{self._count}"
        message = (
            wire.media(self.stream_sid, mulaw_encode(frame.pcm)),
            wire.mark(self.stream_sid, name),
        )
        if await self.outbox.push(message):  # waits while Twilio is behind; False: cleared/over
            if len(self._marks) >= self._max_marks:
                self._marks.popleft()
                self.marks_forgotten.add()
            self._marks.append((name, frame.end))

    def clear(self) -> None:
        if self._closed:
            return
        self.outbox.clear()
        self._marks.clear()
        self.outbox.offer((wire.clear(self.stream_sid),), essential=True)

    def confirmed(self, name: str) -> float | None:
        """The playback position an echoed mark confirms. None for a name that is not a mark
        pending here: someone else's, or one whose audio was cleared (Twilio may echo those at
        once after a `clear`, and their audio was never heard)."""
        if all(pending != name for pending, _ in self._marks):
            return None
        while True:  # echoes come in order: earlier marks are confirmed with this one
            pending, position = self._marks.popleft()
            if pending == name:
                return position

    def close(self) -> None:
        """The stream is over: nothing more may be sent (Twilio rejects messages after `stop`)."""
        self._closed = True
        self.outbox.clear()
        self.outbox.close()
        self._marks.clear()

    async def write(self, send_text: Callable[[str], Awaitable[None]]) -> None:
        """Send queued messages in order until the transport closes (or is cancelled); a failed
        send ends it (the caller decides what a dead socket means)."""
        while (messages := await self.outbox.get()) is not None:
            for message in messages:
                await send_text(message)


FINISH_GRACE = 5.0  # seconds interrupted replies may take to settle after the stream ended


class MediaCall:
    """Protocol logic of one Media Streams call. The server owns the socket: it feeds `handle`
    with parsed events and runs `transport.write` to send.

    The session comes from the hub, which creates sessions for every channel with text-style
    delivery (a reply counts as received once written). For the length of the call it counts
    only what Twilio confirms was played, so a barge-in or a hang-up trims the bot turn to the
    words the caller heard; `finish` gives the session back as it found it.
    """

    def __init__(
        self,
        session: Session,
        stream_sid: str,
        speech: SpeechProviders,
        *,
        call_sid: str = "",
        rest: TwilioCalls | None = None,
    ) -> None:
        self.session = session
        self.call_sid = call_sid
        self.over = asyncio.Event()  # we ended the call: the server closes the stream
        self._rest = rest
        self._ending: asyncio.Task[None] | None = None  # an end or transfer waiting to happen
        self.log = structlog.get_logger("voxline.twilio.media").bind(
            session_id=session.id, stream_sid=stream_sid, call_sid=call_sid
        )
        options = VoiceOptions(lead=TWILIO_LEAD)
        self.transport = MediaStreamTransport(
            stream_sid,
            frame_duration=options.frame_duration,
            on_abandon=lambda reason: self.over.set(),  # Twilio stopped reading: hang up
            log=self.log,
        )
        self._delivery_was_auto = session.delivery.auto
        session.delivery.auto = False
        self.pipeline = VoicePipeline(
            session, self.transport, stt=speech.stt, tts=speech.tts, vad=speech.vad, options=options
        )
        self._tasks = TaskGroup(f"media call {stream_sid}")  # replies and the goodbye
        self._bad_audio = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, greeting: str | None, *, returning: bool) -> None:
        """Greet: a returning caller by the model with what it remembers, a new one with the
        agent's greeting, spoken by our TTS (nobody else speaks on a media stream)."""
        if returning:
            self.session.turns.add_system(RETURNING_CALLER_NOTE)
            self._run(self.session.respond())
        elif greeting:
            await self.session.say(greeting)

    async def finish(self) -> None:
        """The stream is over (stop or a dropped socket): stop speaking and listening, and
        settle the reply in flight, keeping the words that were played."""
        ending = self._ending
        if ending is not None:
            ending.cancel()  # the caller left first: nothing is left to end
        self.transport.close()
        await self.pipeline.close()
        self.session.interrupt()
        await self._tasks.close(grace=FINISH_GRACE)  # interrupted replies settle, then stop
        self.session.delivery.auto = self._delivery_was_auto
        if self._bad_audio:
            self.log.warning("media frames with unusable audio were dropped", count=self._bad_audio)

    # -- inbound ---------------------------------------------------------------------------
    def handle(self, event: wire.MediaEvent) -> None:
        if isinstance(event, wire.Media):
            if self._ending is None:  # the goodbye is not for barging in on
                self._on_media(event)
        elif isinstance(event, wire.Mark):
            position = self.transport.confirmed(event.name)
            if position is not None:
                self.pipeline.played(position)
        elif isinstance(event, wire.Dtmf):
            self._on_dtmf(event.digit)
        elif isinstance(event, wire.Start | wire.Connected):
            self.log.warning("repeated stream set-up ignored", message_type=type(event).__name__)
        elif isinstance(event, wire.Unknown):
            self.log.info("unknown event ignored", event_name=event.event)

    def _on_media(self, media: wire.Media) -> None:
        if media.track and not media.track.startswith("inbound"):
            return  # a bidirectional stream carries the caller only; anything else is not theirs
        try:
            audio = media.audio()
        except wire.MediaProtocolError as exc:
            self._bad_audio += 1
            if self._bad_audio == 1:  # 50 frames a second: say it once, count the rest
                self.log.warning("media frame dropped", error=str(exc))
            return
        if audio:  # the µ-law too: a recognizer that takes it hears the caller untouched
            self.pipeline.push_audio(mulaw_decode(audio), mulaw=audio)

    def inject(self, text: str, *, as_system: bool = False) -> None:
        """Text from outside the call (an operator, a bot over the API): a user turn the agent
        answers aloud, or, `as_system`, an instruction it acts on at once. Either cuts off what
        the agent is saying, like the caller speaking would. Not once the call is ending."""
        if self._ending is not None:
            return
        self.pipeline.cut_off()
        self._run(self.session.injected(text, as_system=as_system))

    def _on_dtmf(self, digit: str) -> None:
        """A key press interrupts like speech would, and is a turn the agent answers."""
        if not digit or self._ending is not None:
            return
        self.pipeline.cut_off()  # records the words played up to here as heard
        self.session.interrupt()
        self.session.turns.add_dtmf(digit)
        self._run(self.session.respond())

    # -- ending the call from our side -----------------------------------------------------
    def request_end(self, reason: str) -> None:
        """Hang up once the goodbye has played (`reason` is for the log)."""
        self.log.info("the agent ends the call", reason=reason)
        self._end_after_goodbye(self._hang_up)

    def request_transfer(self, target: str) -> None:
        """Hand the call to `target` once the agent has said it is transferring."""
        self._end_after_goodbye(lambda: self._transfer(target))

    def _end_after_goodbye(self, action: _EndAction) -> None:
        if self._ending is None and not self.over.is_set() and not self._tasks.closed:
            self._ending = self._tasks.spawn(self._end(action), name="goodbye")

    async def _end(self, action: _EndAction) -> None:
        await until_said(self.pipeline)
        failure = await action()
        if failure is None:
            self.over.set()
            return
        self._ending = None  # the call goes on: the caller is heard again
        self.session.turns.add_system(failure)
        self._run(self.session.respond())

    async def _hang_up(self) -> str | None:
        await hang_up(self._rest, self.call_sid, self.log)
        return None

    async def _transfer(self, target: str) -> str | None:
        return await transfer(self._rest, self.call_sid, target, self.log)

    def _run(self, work: Coroutine[Any, Any, Any]) -> None:
        if self._tasks.closed:  # the stream is over: nothing new starts
            work.close()
            return
        self._tasks.spawn(work, name="reply")
