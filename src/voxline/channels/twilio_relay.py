"""A ConversationRelay call bound to a `Session`: Twilio does speech, voxline does the rest.

Inbound messages become session calls (a final prompt is a user turn, an interrupt trims the bot
turn to what Twilio says was played, a key press is a DTMF turn); the session's streamed reply
goes out as `text` tokens, and each talk cycle is closed with `last: true` when the session goes
back to listening, whatever ended the reply (an answer, an apology after a model error).
Outbound frames go through one bounded outbox so they leave in the order they were produced.

Every relay message is speech or a control Twilio needs, so none is dropped: when the outbox is
full a new text token is merged into the newest queued one (nothing is lost, the count does
not grow), and anything else takes a reserved slot. A peer that lets even those fill up has
stopped reading: the call stops answering and sets `over`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import structlog

from voxline.channels import relay_protocol as wire
from voxline.channels.outbox import BoundedOutbox
from voxline.conversation.session import Session
from voxline.conversation.state import SessionState
from voxline.tasks import TaskGroup

# welcome: Twilio speaks it (TwiML welcomeGreeting); spoken: we send it as tokens (a client
# that is not Twilio); contextual: the model greets a returning caller.
GreetingMode = Literal["welcome", "spoken", "contextual", "none"]
PromptObserver = Callable[[str, bool], None]  # (text, final): every prompt, partials included
FINISH_GRACE = 5.0  # seconds an interrupted reply may take to settle after the socket closed
OUTBOX_LIMIT = 256
"""Messages queued for Twilio before tokens start merging: a reply streams a few dozen tokens a
second and Twilio reads them at once, so only a socket that stopped draining gets here."""
OUTBOX_RESERVE = 16  # control messages (`last`, `end`, play, digits) beyond the limit

RETURNING_CALLER_NOTE = (
    "The person is now calling by phone. Greet them in one short spoken sentence that shows you "
    "remember the earlier conversation, and ask how you can help."
)


class RelayOutbox(BoundedOutbox[str]):
    """The relay's bounded outbox, read by the server's writer like a queue of frames."""

    def __init__(self, *, on_abandon: Callable[[str], None], log: Any) -> None:
        super().__init__(
            "conversation relay",
            limit=OUTBOX_LIMIT,
            reserve=OUTBOX_RESERVE,
            coalesce=_join_tokens,
            on_abandon=on_abandon,
            log=log,
        )

    async def get(self) -> str:
        """The next frame. Once the peer is given up on nothing more comes, and this waits
        until the writer is cancelled at the end of the call."""
        frame = await super().get()
        while frame is None:
            await asyncio.Event().wait()  # never set: the call's end cancels the writer
        return frame


def _join_tokens(queued: str, new: str) -> str | None:
    """Two `text` tokens of one talk cycle as one (None for anything else); runs only on a
    full outbox, so parsing what was already serialised costs nothing in the common case."""
    first, second = json.loads(queued), json.loads(new)
    if not all(m.get("type") == "text" and m.get("last") is False for m in (first, second)):
        return None
    if first.get("lang") != second.get("lang"):
        return None
    return wire.text_token(first["token"] + second["token"], last=False, lang=first.get("lang"))


class RelayCall:
    """Protocol logic of one call. The server owns the socket: it feeds `handle` with parsed
    messages and sends what appears in `outbox`; `over` is set when the peer stopped reading
    (the outbox gave up on it) and the socket should be closed."""

    def __init__(
        self, session: Session, *, call_sid: str = "", on_prompt: PromptObserver | None = None
    ) -> None:
        self.session = session
        self.call_sid = call_sid
        self._on_prompt_seen = on_prompt
        self.ended = asyncio.Event()  # set once `end` has been sent
        self.over = asyncio.Event()  # the peer stopped reading: nothing more is answered
        self._talking = False  # tokens went out and the talk cycle is not closed yet
        self._end_requested: str | Literal[False] | None = False  # handoff data once requested
        self._tasks = TaskGroup(f"relay call {call_sid}")
        self._unsubscribe: list[Callable[[], None]] = []
        self.log = structlog.get_logger("voxline.twilio.relay").bind(
            session_id=session.id, call_sid=call_sid
        )
        self.outbox = RelayOutbox(on_abandon=self._peer_gone, log=self.log)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, greeting: GreetingMode, greeting_text: str | None) -> None:
        """Record what Twilio already says (the welcome greeting is spoken by Twilio itself, so
        it is added before the token stream is attached), then attach, then maybe greet."""
        if greeting == "welcome" and greeting_text:
            await self.session.say(greeting_text)
        self._unsubscribe = [
            self.session.on("bot_text_delta", self._on_delta),
            self.session.on("state_changed", self._on_state),
        ]
        if greeting == "spoken" and greeting_text:
            await self.session.say(greeting_text)
            self._close_talk_cycle()
        if greeting == "contextual":
            self.session.turns.add_system(RETURNING_CALLER_NOTE)
            self._run(self.session.respond())

    async def finish(self) -> None:
        """The socket is gone: stop the reply (keeping what was said) and detach."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        self.session.interrupt()
        await self._tasks.close(grace=FINISH_GRACE)

    # -- inbound ---------------------------------------------------------------------------
    def handle(self, message: wire.RelayMessage) -> None:
        if self.over.is_set():
            return  # Twilio stopped reading: nothing it says can be answered
        if isinstance(message, wire.Prompt):
            self._on_prompt(message)
        elif isinstance(message, wire.Interrupt):
            self._talking = False  # Twilio stopped speaking; the cycle is over on its side
            cut = self.session.interrupt(heard_text=message.heard)
            self.log.info(
                "caller interrupted", heard_chars=len(message.heard or ""), cut=cut is not None
            )
        elif isinstance(message, wire.Dtmf):
            self._on_dtmf(message)
        elif isinstance(message, wire.RelayError):
            self.log.warning("twilio reported an error", description=message.description)
        elif isinstance(message, wire.Info):
            self.log.debug("twilio info", name=message.name, value=message.value)
        elif isinstance(message, wire.Setup):
            self.log.warning("second setup message ignored")
        else:
            self.log.info("unknown message type ignored", type=message.type)

    def inject(self, text: str, *, as_system: bool = False) -> None:
        """Text from outside the call (an operator, a bot over the API): a user turn the agent
        answers aloud, or, `as_system`, an instruction the agent acts on at once."""
        if self._end_requested is not False or self.ended.is_set():
            return
        self._run(self.session.injected(text, as_system=as_system))

    def _on_prompt(self, prompt: wire.Prompt) -> None:
        if self._on_prompt_seen is not None:
            self._on_prompt_seen(prompt.text, prompt.last)
        if not prompt.last or self._end_requested is not False:
            return  # partial prompts are cumulative previews: act on the final one only
        text = prompt.text.strip()
        if text:
            self._run(self.session.send_text(text))

    def _on_dtmf(self, dtmf: wire.Dtmf) -> None:
        if not dtmf.digit or self._end_requested is not False:
            return
        self.session.interrupt()
        self.session.turns.add_dtmf(dtmf.digit)
        self._run(self.session.respond())

    def _run(self, work: Coroutine[Any, Any, Any]) -> None:
        if self._tasks.closed or self.over.is_set():
            work.close()
            return
        self._tasks.spawn(work, name="relay reply")

    # -- outbound --------------------------------------------------------------------------
    def _send(self, frame: str) -> None:
        self.outbox.offer(frame, essential=True)  # a full outbox merges tokens or gives up

    def _peer_gone(self, reason: str) -> None:
        """The outbox gave up on Twilio: stop the reply (from outside the event that filled
        the outbox, which may be the reply's own delta) and answer nothing more."""
        self.over.set()
        asyncio.get_running_loop().call_soon(self.session.interrupt)

    def _on_delta(self, turn: Any, delta: str) -> None:
        if delta:
            self._talking = True
            self._send(wire.text_token(delta, last=False))

    def _on_state(self, old: SessionState, new: SessionState, duration: float) -> None:
        if new != SessionState.LISTENING:
            return
        self._close_talk_cycle()
        if self._end_requested is not False:
            self._send_end(self._end_requested)

    def _close_talk_cycle(self) -> None:
        if self._talking:
            self._talking = False
            self._send(wire.text_token("", last=True))

    def play(self, source: str, *, loop: int = 1) -> None:
        self._send(wire.play(source, loop=loop))

    def send_digits(self, digits: str) -> None:
        self._send(wire.send_digits(digits))

    def set_language(self, code: str) -> None:
        self._send(wire.language(code))

    def request_end(self, handoff_data: str | None = None) -> None:
        """End the session once the current talk cycle is closed, so the goodbye is spoken."""
        if self._end_requested is not False or self.ended.is_set():
            return
        self._end_requested = handoff_data
        if self.session.state == SessionState.LISTENING and not self._talking:
            self._send_end(handoff_data)

    def _send_end(self, handoff_data: str | None) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        self._send(wire.end(handoff_data))
        self.log.info("ending the relay session", handoff=handoff_data is not None)
