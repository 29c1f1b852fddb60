"""A Twilio Media Streams call spoken by a Realtime model: µ-law in, µ-law out, untouched.

Twilio streams 8 kHz µ-law and a Realtime session can take and give exactly that
(`audio/pcmu`), so the caller's payload bytes are appended to the model's input as they arrive
and the model's audio deltas become `media` messages as they arrive, with nothing decoded,
resampled or paced in between (Twilio buffers and plays in order). What the caller actually
heard comes back the way the cascaded Media Streams call learns it: every 20 ms frame sent is
followed by a `mark`, and Twilio echoes a mark once the audio before it has played. `clear`
drops Twilio's buffer on a barge-in; marks it then echoes at once were never heard and are
ignored.

This is the Realtime counterpart of `channels/twilio_media.MediaCall` (it would sit beside it
in `channels/`): the server's Media Streams route runs it instead of the cascaded pipeline
when the agent's `llm` is a Realtime spec, and no speech model is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable

import structlog
from starlette.websockets import WebSocketDisconnect

from voxline.channels import media_protocol as wire
from voxline.channels.media_tools import GOODBYE_LIMIT
from voxline.channels.twilio_calls import TwilioCalls, hang_up, transfer
from voxline.conversation.session import Session
from voxline.providers.realtime.config import PCMU
from voxline.tasks import TaskGroup
from voxline.voice.realtime import RealtimeVoiceEngine

FRAME = 160  # bytes of µ-law per 20 ms frame, one mark each
MARK_PREFIX = "rt-"


class MediaStreamPort:
    """The model's audio out to one Media Stream, and what of it Twilio has played."""

    def __init__(self, stream_sid: str, on_idle: Callable[[], None] | None = None) -> None:
        self.stream_sid = stream_sid
        self.on_idle = on_idle
        self._outbox: deque[str] = deque()
        self._queued = asyncio.Event()
        self._marks: deque[tuple[str, str, int]] = deque()  # (mark, item, bytes of item sent)
        self._sent: dict[str, int] = {}  # item -> bytes sent to Twilio
        self._played: dict[str, int] = {}  # item -> bytes Twilio confirmed played
        self._count = 0
        self._closed = False

    @property
    def playing(self) -> bool:
        return bool(self._marks)

    def play(self, item_id: str, audio: bytes) -> None:
        if self._closed:
            return
        sent = self._sent.get(item_id, 0)
        for start in range(0, len(audio), FRAME):
            frame = audio[start : start + FRAME]
            sent += len(frame)
            self._count += 1
            name = f"{MARK_PREFIX}{self._count}"
            self._marks.append((name, item_id, sent))
            self._put(wire.media(self.stream_sid, frame))
            self._put(wire.mark(self.stream_sid, name))
        self._sent[item_id] = sent

    def clear(self) -> None:
        if self._closed:
            return
        self._outbox.clear()
        self._marks.clear()
        self._put(wire.clear(self.stream_sid))

    def played_bytes(self, item_id: str) -> int:
        return self._played.get(item_id, 0)

    def confirmed(self, name: str) -> None:
        """A `mark` echo: the audio before it has played (earlier marks with it). A name not
        pending here (cleared, or not ours) says nothing."""
        if all(pending != name for pending, _, _ in self._marks):
            return
        while self._marks:
            pending, item_id, offset = self._marks.popleft()
            self._played[item_id] = max(self._played.get(item_id, 0), offset)
            if pending == name:
                break
        if not self._marks and self.on_idle is not None:
            self.on_idle()

    def close(self) -> None:
        self._closed = True
        self._outbox.clear()
        self._marks.clear()

    async def write(self, send_text: Callable[[str], Awaitable[None]]) -> None:
        """Send queued messages in order until cancelled; a dead socket ends it quietly (the
        reader sees the same disconnect and ends the call)."""
        try:
            while True:
                while not self._outbox:
                    self._queued.clear()
                    await self._queued.wait()
                await send_text(self._outbox.popleft())
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    def _put(self, message: str) -> None:
        self._outbox.append(message)
        self._queued.set()


class RealtimeMediaCall:
    """One Media Streams call on a Realtime model. The server owns the socket: it feeds
    `feed` with the parsed events and runs `port.write` to send."""

    def __init__(
        self,
        session: Session,
        stream_sid: str,
        spec: str,
        *,
        call_sid: str = "",
        rest: TwilioCalls | None = None,
    ) -> None:
        self.session = session
        self.call_sid = call_sid
        self.over = asyncio.Event()  # we ended the call (or lost the model): close the stream
        self._rest = rest
        self._ending: asyncio.Task[None] | None = None
        self._tasks = TaskGroup(f"realtime media call {stream_sid}")  # the goodbye
        self.port = MediaStreamPort(stream_sid)
        self.engine = RealtimeVoiceEngine(
            session, spec, self.port, audio=PCMU, on_failed=self.over.set
        )
        self.port.on_idle = self.engine.playback_finished
        self._bad_audio = 0
        self.log = structlog.get_logger("voxline.twilio.media").bind(
            session_id=session.id, stream_sid=stream_sid, call_sid=call_sid
        )

    async def start(self, greeting: str | None, *, returning: bool, note: str) -> None:
        """Connect the model (raises `RealtimeConnectError`), then greet: a returning caller
        by the model with what it remembers (`note`), a new one with the agent's greeting."""
        await self.engine.start()
        if returning:
            self.engine.instruct(note)
        elif greeting:
            self.engine.greet(greeting)

    async def feed(self, events: AsyncIterable[wire.MediaEvent]) -> None:
        """Twilio's events into the call until it stops the stream or the socket drops."""
        async for event in events:
            if isinstance(event, wire.Stop):
                return
            self.handle(event)

    def handle(self, event: wire.MediaEvent) -> None:
        if isinstance(event, wire.Media):
            if self._ending is None:  # the goodbye is not for barging in on
                self._on_media(event)
        elif isinstance(event, wire.Mark):
            self.port.confirmed(event.name)
        elif isinstance(event, wire.Dtmf):
            if event.digit and self._ending is None:
                self.engine.dtmf(event.digit)
        elif isinstance(event, wire.Unknown):
            self.log.info("unknown event ignored", event_name=event.event)

    def _on_media(self, media: wire.Media) -> None:
        if media.track and not media.track.startswith("inbound"):
            return  # a bidirectional stream carries the caller only
        try:
            audio = media.audio()
        except wire.MediaProtocolError as exc:
            self._bad_audio += 1
            if self._bad_audio == 1:
                self.log.warning("media frame dropped", error=str(exc))
            return
        self.engine.push_audio(audio)  # µ-law as Twilio sent it: the session's input format

    async def finish(self) -> None:
        """The stream is over: close the model's socket and settle the answer in flight."""
        await self._tasks.close()  # a goodbye still waiting: the caller left first
        self.port.close()
        await self.engine.close()
        if self._bad_audio:
            self.log.warning("media frames with unusable audio were dropped", count=self._bad_audio)

    # -- the LiveCall and call-control surface ---------------------------------------------
    def inject(self, text: str, *, as_system: bool = False) -> None:
        """Text from outside the call: the caller's words, or an instruction acted on now."""
        if self._ending is not None:
            return
        if as_system:
            self.engine.instruct(text)
        else:
            self.engine.say_as_user(text)

    def request_end(self, reason: str) -> None:
        self.log.info("the agent ends the call", reason=reason)
        self._after_goodbye(self._hang_up)

    def request_transfer(self, target: str) -> None:
        self._after_goodbye(lambda: self._transfer(target))

    def _after_goodbye(self, action: Callable[[], Awaitable[str | None]]) -> None:
        if self._ending is None and not self.over.is_set() and not self._tasks.closed:
            self._ending = self._tasks.spawn(self._end(action), name="goodbye")

    async def _end(self, action: Callable[[], Awaitable[str | None]]) -> None:
        """Wait for the goodbye (the tool's own response and its audio) to be heard, then act;
        a failed transfer is told to the model, and the call goes on."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GOODBYE_LIMIT):
                while self.engine.bot_active:  # noqa: ASYNC110 (several conditions, no one event)
                    await asyncio.sleep(0.05)
        failure = await action()
        if failure is None:
            self.over.set()
            return
        self._ending = None
        self.engine.instruct(failure)

    async def _hang_up(self) -> str | None:
        await hang_up(self._rest, self.call_sid, self.log)
        return None

    async def _transfer(self, target: str) -> str | None:
        return await transfer(self._rest, self.call_sid, target, self.log)
