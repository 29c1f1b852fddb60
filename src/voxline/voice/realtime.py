"""`RealtimeVoiceEngine`: a live `Session` heard and spoken by a Realtime (speech-to-speech) model.

The cascaded pipeline (VAD → STT → LLM → TTS) is replaced by one socket to a model that hears
and speaks; everything voxline promises around a conversation stays: the same turn store,
events, debug feed, tools and approvals.

- **Turns.** When the server commits the caller's speech, a `UserTurn` takes its place at once
  (its transcript arrives later, often after the answer has begun, and the order must be the
  caller's); the transcript fills it in. The model's transcript streams into a versioned
  `BotTurn`, one update and one `bot_text_delta` per delta.
- **Audio** goes to the channel (`RealtimeAudioOut`) the moment it arrives, in the session's
  format: µ-law on Twilio untouched both ways, nothing decoded or resampled here.
- **Tools** run through voxline's `ToolExecutor` (timeouts, retries, breaker, approvals) as
  tasks of the session's group (`realtime_tools.RealtimeToolCalls` runs them). Each result
  goes back as `function_call_output`, and once the response that asked and all its calls are
  done, one `response.create` lets the model go on. A tool that needs approval returns the
  pending message (the model says it is checking); when a human decides, the session runs the
  tool and records a fresh call/result pair, which is sent as items before asking for a
  response (the engine answers for the session: `Session.set_responder`).
- **Barge-in.** Caller speech while the model's audio is playing (or being made) stops local
  playback at once (`clear()`: Twilio's `clear`), tells the server how much of the item was
  heard (`conversation.item.truncate` with the milliseconds actually played), drops the item's
  late deltas and trims the bot turn to the same share of its transcript.
- **Latency**: end of the caller's speech (mapped from the server's `audio_end_ms` back to when
  that audio left here) → first audio delta, as `metrics(kind="turn")` like the pipeline's.
- **Reconnects** (the client redials and re-seeds): the answer in flight is lost, so its turn
  ends as interrupted; an exchange left unanswered is answered on the new connection.
- **Summaries** after each response, mirrored on the server's items: `realtime_summary`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import structlog

from voxline.conversation.session import Session
from voxline.conversation.state import InvalidTransition, SessionState
from voxline.conversation.turns import BotTurn, DtmfTurn, ToolResultTurn, UserTurn
from voxline.providers.realtime import events as wire
from voxline.providers.realtime.client import RealtimeClient
from voxline.providers.realtime.config import AudioFormat, config_from_agent
from voxline.providers.realtime.events import RealtimeEvent, RealtimeProtocolError
from voxline.providers.realtime.history import DTMF_NOTE, SpeakingRate, seed_items
from voxline.providers.realtime.latency import LatencyTracker
from voxline.providers.realtime.registry import create_realtime
from voxline.tools.executor import ToolExecutor
from voxline.voice.metrics import LatencySummary, TurnLatency, summarize
from voxline.voice.realtime_summary import RealtimeSummaries
from voxline.voice.realtime_tools import RealtimeToolCalls

S = SessionState
BENIGN_ERRORS = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response"}
)


class RealtimeAudioOut(Protocol):
    """A channel's side of a Realtime call: it plays the model's audio (in the channel's own
    format), drops what is not played yet on `clear()` (barge-in), and knows how many bytes of
    each item are confirmed played; `playing` while some are not."""

    @property
    def playing(self) -> bool: ...

    def play(self, item_id: str, audio: bytes) -> None: ...

    def clear(self) -> None: ...

    def played_bytes(self, item_id: str) -> int: ...


@dataclass
class _Response:
    """One model response in flight."""

    id: str
    bots: dict[str, BotTurn] = field(default_factory=dict)  # assistant item id -> its turn
    calls: list[str] = field(default_factory=list)  # call ids it asked for
    audio_seen: bool = False


class RealtimeVoiceEngine:
    """Runs one live session on a Realtime model (see the module doc)."""

    def __init__(
        self,
        session: Session,
        spec: str,
        out: RealtimeAudioOut,
        *,
        audio: AudioFormat,
        on_failed: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        client: RealtimeClient | None = None,
    ) -> None:
        self.session = session
        self.out = out
        self.audio = audio
        self._failed_callback = on_failed
        tools = list(session.agent.tools())
        self.executor = ToolExecutor(
            tools,
            approvals=session.approvals,
            pending_message=session.spec.approvals.pending_message,
        )
        self.config = config_from_agent(
            session.spec,
            instructions=session.agent.instructions(),
            tools=[t.definition() for t in tools],
            audio=audio,
        )
        self.client = client or create_realtime(
            spec, session.settings, config=self.config, seed=self._seed
        )
        self._response: _Response | None = None
        self._users: dict[str, UserTurn] = {}  # input item id -> its turn
        self._items_audio: dict[str, int] = {}  # assistant item id -> bytes received
        self._bots: dict[str, BotTurn] = {}  # assistant item id -> its turn
        self._cut: set[str] = set()  # items and responses cut short: their late deltas are dropped
        self._playing_item: str | None = None  # the assistant item whose audio went out last
        self._rate = SpeakingRate()  # judges a barge-in when the transcript ran ahead of audio
        self._calls = RealtimeToolCalls(
            session, self.client, self.executor, on_finished=self._tool_finished
        )
        self._tools = self._calls.running  # call id -> its task, while it runs
        self._waiting_calls: set[str] = set()  # calls of a finished response still running
        self._want_response = False  # ask for a response once the one in flight is done
        self._lost_answer = False  # a dropped socket took an answer with it
        self._asked = False  # a response.create is on its way and not yet started
        self.latency = LatencyTracker(audio, self._report, clock)
        self._pump: asyncio.Task[None] | None = None
        self.summaries = RealtimeSummaries(session, self.client)
        self._unsubscribe = session.bus.on("approval_resolved", self._calls.on_approval_resolved)
        session.set_responder(self.request_response)  # `respond()` asks this model
        self.log = structlog.get_logger("voxline.voice.realtime").bind(
            session_id=session.id, connection=session.connection_id, realtime=spec
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (configured and seeded with the conversation so far) and start listening;
        raises `RealtimeConnectError` when the model cannot be reached."""
        await self.client.connect()
        self._pump = asyncio.create_task(self._run(), name="realtime events")

    async def close(self) -> LatencySummary:
        """Stop listening and speaking; the answer in flight ends as interrupted, keeping what
        was said. Tools that started are waited for, so their real results are recorded."""
        self._unsubscribe()
        self.summaries.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await self._calls.wait()  # a started tool records its real result
        await self.client.close()
        self._end_response(interrupted=True)
        self.latency.retire()
        summary = summarize(self.latency.latencies)
        self.session.bus.emit("metrics", kind="voice_session", metrics=summary)
        self.log.info("realtime session latency", turns=summary.turns, **summary.milliseconds())
        return summary

    @property
    def bot_active(self) -> bool:
        """The model is answering (or about to), its audio is playing, or its tools run."""
        busy = self._response is not None or self._asked or self._waiting_calls
        return bool(busy or self.out.playing or self._tools)

    # -- what the channel hands in ---------------------------------------------------------
    def push_audio(self, audio: bytes) -> None:
        """Caller audio in the session's format, as it arrives."""
        self.latency.sent(len(audio))
        self.client.append_audio(audio)

    def greet(self, greeting: str) -> None:
        """Have the model say the agent's greeting."""
        self.request_response(f'Greet the caller by saying exactly: "{greeting}"')

    def instruct(self, text: str) -> None:
        """An instruction for the model to act on now (a returning caller, an operator)."""
        self.interrupt()
        self.session.turns.add_system(text)
        self.client.send(wire.message_item("system", text))
        self.request_response()

    def say_as_user(self, text: str) -> None:
        """Text from outside the call, as the caller's words (an operator's injection)."""
        self.interrupt()
        self.session.turns.add_user_text(text, channel=self.session.channel)
        self.client.send(wire.message_item("user", text))
        self.request_response()

    def dtmf(self, digit: str) -> None:
        """A key press interrupts like speech would, and is a turn the model answers."""
        self.interrupt()
        self.session.turns.add_dtmf(digit)
        self.client.send(wire.message_item("user", DTMF_NOTE.format(digits=digit)))
        self.request_response()

    def interrupt(self) -> None:
        """Stop the model from here (not the server's VAD): cancel its response too."""
        if self._response is not None:
            self.client.send(wire.response_cancel())
        self._barge_in()

    def request_response(self, instructions: str | None = None) -> None:
        """Ask the model to answer now, or as soon as the response in flight is done."""
        if self._response is not None or self._waiting_calls:
            self._want_response = True
            return
        self._asked = True  # until the server starts it (or refuses)
        self.client.send(wire.response_create(instructions))

    def playback_finished(self) -> None:
        """The channel has played everything it was given."""
        if self._response is None:
            self._playing_item = None  # all heard: nothing left to cut
        if self._response is None and not self._tools:
            self._to(S.LISTENING)

    # -- events ----------------------------------------------------------------------------
    async def _run(self) -> None:
        async for event in self.client.events():
            handler = self._HANDLERS.get(event.type)
            try:
                self.summaries.on_event(event)
                if handler is not None:
                    handler(self, event)
            except Exception:  # one bad event must not end the call
                self.log.exception("realtime event failed", event_type=event.type)

    def _on_speech_started(self, event: RealtimeEvent) -> None:
        if self.session.spec.turn.interruptible and (self._response or self.out.playing):
            self._barge_in()
        self._to(S.LISTENING)

    def _on_speech_stopped(self, event: RealtimeEvent) -> None:
        wait = self.config.silence_duration_ms / 1000
        self.latency.speech_stopped(event.number("audio_end_ms"), wait)
        self._to(S.TRANSCRIBING)

    def _on_committed(self, event: RealtimeEvent) -> None:
        item_id = event.text("item_id")
        if not self.config.transcription_model:
            return  # no transcript will come: the caller's words are not known here
        if item_id and item_id not in self._users:
            turn = UserTurn(
                channel=self.session.channel, final=False, metadata={"realtime_item": item_id}
            )
            self.session.turns.add(turn)
            self._users[item_id] = turn
            self.latency.user_turn(turn.id)

    def _on_user_delta(self, event: RealtimeEvent) -> None:
        turn = self._users.get(event.text("item_id"))
        if turn is not None and turn.id in self.session.turns:
            turn.content += event.text("delta")

    def _on_user_transcript(self, event: RealtimeEvent) -> None:
        turn = self._users.pop(event.text("item_id"), None)
        if turn is None or turn.id not in self.session.turns:
            return
        text = event.text("transcript").strip()
        if not text:
            self.session.turns.delete(turn.id)
            return
        turn.content = text
        turn.final = True
        self.latency.reach("transcript", turn.id)

    def _on_user_failed(self, event: RealtimeEvent) -> None:
        turn = self._users.pop(event.text("item_id"), None)
        code, message = wire.error_message(event)
        self.log.warning("caller speech not transcribed", code=code, error=message)
        if turn is not None and turn.id in self.session.turns and not turn.content.strip():
            self.session.turns.delete(turn.id)

    def _on_response_created(self, event: RealtimeEvent) -> None:
        self._asked = False
        response_id = event.object("response").get("id") or event.text("response_id")
        self._end_response(interrupted=True)  # a response never seen done is over now
        self._response = _Response(str(response_id or ""))
        self.session.bus.emit("reply_started")
        self._to(S.THINKING)

    def _on_audio_delta(self, event: RealtimeEvent) -> None:
        item_id = event.text("item_id")
        if self._dropped(event):
            return
        try:
            audio = event.audio()
        except RealtimeProtocolError as exc:
            self.log.warning("audio delta dropped", error=str(exc))
            return
        self._items_audio[item_id] = self._items_audio.get(item_id, 0) + len(audio)
        self._playing_item = item_id
        self.out.play(item_id, audio)
        if self._response is not None and not self._response.audio_seen:
            self._response.audio_seen = True
            self.latency.first_audio()
        self._to(S.SPEAKING)

    def _on_transcript_delta(self, event: RealtimeEvent) -> None:
        if self._dropped(event):
            return
        delta = event.text("delta")
        bot = self._bot_for(event.text("item_id"), create=bool(delta.strip()))
        if bot is None:
            return
        if not bot.content:
            delta = delta.lstrip()
        bot.content += delta
        self.session.bus.emit("bot_text_delta", turn=bot, delta=delta)
        self.latency.reach("llm_first_token")

    def _on_transcript_done(self, event: RealtimeEvent) -> None:
        if self._dropped(event):
            return
        text = (event.text("transcript") or event.text("text")).strip()
        bot = self._bot_for(event.text("item_id"), create=bool(text))
        if bot is not None and text and bot.content != text:
            bot.content = text  # the server's full transcript is the record

    def _on_item_done(self, event: RealtimeEvent) -> None:
        item = wire.item_of(event)
        if item.get("type") == "function_call":
            if item.get("status", "completed") == "completed":
                calls = self._response.calls if self._response is not None else None
                if self._calls.start(item, calls):
                    self._to(S.CALLING_TOOLS)
            else:
                self.log.info("unfinished function call ignored", status=item.get("status"))
            return
        response, bot_item = self._response, str(item.get("id"))
        bot = response.bots.get(bot_item) if response is not None else None
        if bot is not None and bot.id in self.session.turns and not bot.interrupted:
            bot.complete = item.get("status", "completed") == "completed"
            if bot.complete:
                self._rate.add(bot.content, self.audio.ms(self._items_audio.get(bot_item, 0)))

    def _on_response_done(self, event: RealtimeEvent) -> None:
        body = event.object("response")
        status = str(body.get("status") or "completed")
        response = self._response
        if status == "failed":
            details = body.get("status_details")
            error = details.get("error") if isinstance(details, dict) else None
            self.log.error("realtime response failed", error=error)
            self.session.bus.emit(
                "error", error=RuntimeError(f"response failed: {error}"), where="realtime"
            )
        elif status == "incomplete":
            self.log.warning("realtime response incomplete", details=body.get("status_details"))
        self._end_response(interrupted=status != "completed")
        self.summaries.after_response()
        if response is not None and response.calls:
            pending = {c for c in response.calls if c in self._tools}
            self._waiting_calls |= pending
            if not pending:  # every result is in: the model goes on
                self._want_response = False
                self.request_response()
                return
        if self._want_response and not self._waiting_calls:
            self._want_response = False
            self.request_response()
        elif self._tools:
            self._to(S.CALLING_TOOLS)
        elif not self.out.playing:
            self._to(S.LISTENING)

    def _on_error(self, event: RealtimeEvent) -> None:
        code, message = wire.error_message(event)
        self._asked = False  # whatever was refused, no response is coming for it
        if code in BENIGN_ERRORS:
            self.log.info("realtime server declined", code=code, error=message)
            return
        self.log.warning("realtime server error", code=code, error=message)
        self.session.bus.emit("error", error=RuntimeError(f"{code}: {message}"), where="realtime")

    def _on_connection_lost(self, event: RealtimeEvent) -> None:
        self._lost_answer = self._response is not None or bool(self._waiting_calls)
        self._end_response(interrupted=True)
        for turn in self._users.values():  # speech whose transcript died with the socket
            if turn.id in self.session.turns and not turn.content.strip():
                self.session.turns.delete(turn.id)
        self._users.clear()
        self._waiting_calls.clear()
        self._want_response = self._asked = False

    def _on_reconnected(self, event: RealtimeEvent) -> None:
        self.latency.reset()
        own = [t for t in self.session.turns.all() if self.session.turns.own(t)]
        unanswered = own and isinstance(own[-1], UserTurn | DtmfTurn | ToolResultTurn)
        lost, self._lost_answer = self._lost_answer, False
        if (lost or unanswered) and not self._tools:
            self.request_response()  # the answer died with the socket: ask again

    def _on_failed(self, event: RealtimeEvent) -> None:
        self.session.bus.emit(
            "error", error=RuntimeError("the Realtime model is unreachable"), where="realtime"
        )
        if self._failed_callback is not None:
            self._failed_callback()

    _HANDLERS: ClassVar[dict[str, Callable[[RealtimeVoiceEngine, RealtimeEvent], None]]] = {
        "input_audio_buffer.speech_started": _on_speech_started,
        "input_audio_buffer.speech_stopped": _on_speech_stopped,
        "input_audio_buffer.committed": _on_committed,
        "conversation.item.input_audio_transcription.delta": _on_user_delta,
        "conversation.item.input_audio_transcription.completed": _on_user_transcript,
        "conversation.item.input_audio_transcription.failed": _on_user_failed,
        "response.created": _on_response_created,
        "response.output_audio.delta": _on_audio_delta,
        "response.output_audio_transcript.delta": _on_transcript_delta,
        "response.output_text.delta": _on_transcript_delta,
        "response.output_audio_transcript.done": _on_transcript_done,
        "response.output_text.done": _on_transcript_done,
        "response.output_item.done": _on_item_done,
        "response.done": _on_response_done,
        "error": _on_error,
        wire.CONNECTION_LOST: _on_connection_lost,
        wire.RECONNECTED: _on_reconnected,
        wire.FAILED: _on_failed,
    }

    # -- responses and turns ---------------------------------------------------------------
    def _dropped(self, event: RealtimeEvent) -> bool:
        """A late delta of an item or response cut by a barge-in, or of no response at all."""
        response = self._response
        return (
            response is None
            or event.text("item_id") in self._cut
            or event.text("response_id") in self._cut
        )

    def _bot_for(self, item_id: str, *, create: bool) -> BotTurn | None:
        response = self._response
        if response is None:
            return None
        bot = response.bots.get(item_id)
        if bot is None and create:
            bot = BotTurn(channel=self.session.channel, metadata={"realtime_item": item_id})
            self.session.turns.add(bot)
            response.bots[item_id] = self._bots[item_id] = bot
        return bot if bot is not None and bot.id in self.session.turns else None

    def _end_response(self, *, interrupted: bool) -> None:
        """The response in flight is over: its turns end complete, or interrupted."""
        response, self._response = self._response, None
        if response is None:
            return
        last: BotTurn | None = None
        for bot in response.bots.values():
            if bot.id not in self.session.turns:
                continue
            last = bot
            if interrupted and not bot.complete and not bot.interrupted:
                bot.interrupted = True
            elif not interrupted and not bot.interrupted:
                bot.complete = True
        self.session.bus.emit("reply_finished", turn=last)

    def _barge_in(self) -> None:
        """Stop playback now, tell the server what was heard, trim the turn to it."""
        response = self._response
        was_playing = self.out.playing
        if response is None and not was_playing:
            return  # the model is quiet: nothing to cut
        item_id, self._playing_item = self._playing_item, None
        played = self.out.played_bytes(item_id) if item_id else 0
        self.out.clear()
        cut: BotTurn | None = None
        if response is not None:
            self._cut.add(response.id)
            self._cut.update(response.bots)
        if item_id is not None:
            played_ms = self.audio.ms(played)
            self.client.send(wire.truncate(item_id, played_ms))
            self._cut.add(item_id)
            bot = self._bots.get(item_id)
            if bot is not None and bot.id in self.session.turns:
                received = self.audio.ms(self._items_audio.get(item_id, 0))
                cut = self._trim_turn(bot, self._rate.heard(bot.content, played_ms, received))
        if response is not None:
            for bot in response.bots.values():  # items that never played were not heard
                if bot.id in self.session.turns and not bot.interrupted and not bot.complete:
                    self._trim_turn(bot, "")
            self._end_response(interrupted=True)
        self.latency.retire()
        self._to(S.INTERRUPTED)
        self.session.bus.emit("interrupted", turn=cut)
        self.log.info("barge-in", item=item_id, played_ms=self.audio.ms(played))

    def _trim_turn(self, bot: BotTurn, heard: str) -> BotTurn | None:
        if heard == bot.content and bot.complete:
            return bot
        if not heard.strip():
            self.session.turns.delete(bot.id)
            return None
        bot.content = heard
        bot.interrupted = True
        return bot

    # -- tools -----------------------------------------------------------------------------
    def _tool_finished(self, call_id: str) -> None:
        """A call's result went to the model: once the response that asked has all of its
        results, ask for the answer (or after the response now speaking, if a later one is)."""
        self._waiting_calls.discard(call_id)
        if self._waiting_calls:
            return  # the last of the response's calls asks for the answer
        if self._response is None:
            self._want_response = False
            self.request_response()
        elif call_id not in self._response.calls:
            self._want_response = True  # a later response is speaking: answer after it

    # -- latency and state -----------------------------------------------------------------
    def _report(self, probe: TurnLatency) -> None:
        self.session.bus.emit("metrics", kind="turn", metrics=probe)
        self.log.info("turn latency", turn_id=probe.turn_id, **probe.milliseconds())

    def _to(self, state: SessionState) -> None:
        """Move the session's state machine, through THINKING when the table asks for it; a
        closed session (IDLE) is left alone."""
        current = self.session.state
        if current == state or current == S.IDLE:
            return
        try:
            self.session.set_state(state)
        except InvalidTransition:
            with contextlib.suppress(InvalidTransition):
                self.session.set_state(S.THINKING)
                self.session.set_state(state)

    def _seed(self) -> list[dict[str, Any]]:
        return seed_items(self.session.turns.all())
