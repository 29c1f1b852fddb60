"""Outbound: bot text to sentences, sentences to TTS, audio to the channel at real-time pace.

Three stages, each as early as it can be: a sentence goes to TTS the moment the LLM completes it
(so the first audio waits for one sentence, not the reply; with `first_chunk_words`, a turn's
opening phrase goes on its own as soon as a clause or a few words are complete); TTS of the
next sentence overlaps playback of this one (a small bounded queue between them); and frames go
to the channel only as fast as they play, so a barge-in has nothing but a frame or two in the
channel to clear.

The speaker also keeps the map from playback position to characters of each bot turn: as each
TTS chunk finishes playing, `Delivery.mark` records how much of its turn the caller has heard,
and on `stop()` the words of the chunk cut off midway are counted too, so the session trims the
turn to exactly what was played.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import structlog

from voxline.audio.clock import Clock
from voxline.audio.frames import AudioFrame
from voxline.audio.pacing import Pacer
from voxline.audio.playback import PlaybackTracker
from voxline.audio.resample import resample
from voxline.conversation.engine import Delivery
from voxline.conversation.turns import BotTurn
from voxline.providers.tts.base import TTS, OutputChannel, for_channel
from voxline.telemetry import counters
from voxline.text.sentences import SentenceChunker
from voxline.voice.transport import AudioTransport

log = structlog.get_logger("voxline.voice")
_EPSILON = 1e-9
MAX_UNSPOKEN_CHARS = 20_000
"""Reply text waiting for TTS (the model writes faster than speech plays): about twenty minutes
of speech. A turn that would pass it is not spoken from that sentence on (counted in
`unspoken_dropped`); only played pieces are marked delivered, so an interruption still trims
the turn to what was heard."""
MAX_UNCONFIRMED = 512
"""Pieces sent and not yet confirmed played: a sentence or so each, so this many means the
channel stopped confirming; the oldest are then forgotten (`unconfirmed_dropped`), unmarked."""


@dataclass(slots=True)
class _Sentence:
    turn: BotTurn
    text: str
    start: int  # character offsets of `text` in the turn's content
    end: int


@dataclass(slots=True)
class _Piece:
    """A TTS chunk at the channel's rate, with the characters of its turn it speaks."""

    pcm: npt.NDArray[np.int16]
    turn: BotTurn
    text: str
    start: int
    end: int


class _Run:
    """Queues and flags of the speech between two stops. `stop()` swaps in a fresh run, so a
    cancelled worker finishing late can only touch the run it belonged to."""

    def __init__(self, queue_size: int) -> None:
        self.audio: asyncio.Queue[_Piece] = asyncio.Queue(queue_size)
        self.synthesizing = False
        self.waiting_for_room = False
        self.sending = False
        # Set whenever audio is queued or a synthesis ends: the player waiting for more of a
        # stretch wakes on either, so a synthesis that ends with no audio cannot strand it.
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []


@dataclass(slots=True)
class _Span:
    """A piece placed on the output timeline."""

    begin: float
    end: float
    piece: _Piece


class Speaker:
    """Speaks bot turns through a transport. Callbacks: `on_audio` when TTS produces audio,
    `on_play` when a stretch of speech starts playing, `on_idle` when all audio has gone out,
    `on_error` when the voice failed (a sentence not spoken, or a fallback voice taking over)."""

    def __init__(
        self,
        tts: TTS,
        transport: AudioTransport,
        delivery: Delivery,
        *,
        clock: Clock,
        voice: str | None = None,
        frame_duration: float = 0.02,
        lead: float = 0.0,
        queue_size: int = 4,
        on_audio: Callable[[], None] = lambda: None,
        on_play: Callable[[], None] = lambda: None,
        on_idle: Callable[[], None] = lambda: None,
        on_error: Callable[[Exception], None] = lambda error: None,
        first_chunk_words: int | None = None,
    ) -> None:
        self.rate = transport.output_rate
        # A hosted voice speaks the channel's own format where it can (µ-law on the phone).
        self.tts = for_channel(tts, OutputChannel(self.rate, on_failure=on_error))
        self.transport = transport
        self.delivery = delivery
        self.clock = clock
        self.voice = voice
        self.frame_duration = frame_duration
        self.lead = lead
        self.tracker = PlaybackTracker()
        self._on_audio = on_audio
        self._on_play = on_play
        self._on_idle = on_idle
        self._on_error = on_error
        self._queue_size = queue_size
        self._first_words = first_chunk_words
        self._turn: BotTurn | None = None
        self._chunker = self._new_chunker()
        self._offset = 0  # where the next sentence is searched for in the turn's content
        self._sentences: deque[_Sentence] = deque()
        self._unspoken = 0  # characters in `_sentences`
        self._cut_turn: BotTurn | None = None  # a turn whose rest is not spoken (too long)
        self._has_text = asyncio.Event()
        self._run = _Run(queue_size)
        self._spans: deque[_Span] = deque()
        self._cursor = 0.0  # timeline end of everything queued (equals the tracker's)
        self._played = 0.0  # timeline position confirmed played
        self._resume = asyncio.Event()
        self._resume.set()
        self.underruns = 0
        self.unspoken_dropped = 0  # sentences not spoken: `MAX_UNSPOKEN_CHARS` was reached
        self.unconfirmed_dropped = 0  # pieces forgotten unconfirmed at `MAX_UNCONFIRMED`

    # -- text in -----------------------------------------------------------------------------
    def text(self, turn: BotTurn, delta: str) -> None:
        """A delta of `turn` (already appended to its content)."""
        if self._turn is not turn:
            self.end_turn()
            self._turn, self._offset = turn, 0
            if turn.complete:  # known in full (a greeting, a fixed line): no model to wait for,
                self._chunker = SentenceChunker()  # so whole sentences, for the best prosody
        for sentence in self._chunker.feed(delta):
            self._enqueue(turn, sentence)
        if turn.complete:
            self.end_turn()

    def end_turn(self) -> None:
        """The current turn will get no more text: speak what the chunker still holds."""
        turn = self._turn
        if turn is None:
            return
        for sentence in self._chunker.flush():
            self._enqueue(turn, sentence)
        self._turn = None
        self._chunker = self._new_chunker()

    def _new_chunker(self) -> SentenceChunker:
        """A chunker for the next turn: its opening phrase goes to TTS early (`first_chunk_words`);
        the rest of the turn in whole sentences."""
        return SentenceChunker(first_words=self._first_words)

    def _enqueue(self, turn: BotTurn, text: str) -> None:
        start = turn.content.find(text, self._offset)
        if start < 0:  # the content no longer holds it (trimmed); speak it, mark nothing new
            start = self._offset
        end = start + len(text)
        self._offset = end
        if turn is self._cut_turn or self._unspoken + len(text) > MAX_UNSPOKEN_CHARS:
            self._cut_turn = turn  # the rest of the turn goes too, never a sentence with a gap
            self.unspoken_dropped += 1
            counters.dropped("reply text beyond the cap")
            if self.unspoken_dropped == 1:  # the total is logged at close
                log.warning("reply too far ahead of speech: sentences not spoken", turn_id=turn.id)
            return
        self._unspoken += len(text)
        self._sentences.append(_Sentence(turn, text, start, end))
        self._has_text.set()
        self._start()

    # -- state -------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Speech is pending: text waiting for TTS, audio queued, or frames going out."""
        run = self._run
        return bool(
            self._sentences
            or run.synthesizing
            or not run.audio.empty()
            or run.sending
            or self.tracker.pending > _EPSILON
        )

    @property
    def busy(self) -> bool:
        """TTS has work it is doing now (not merely waiting for playback to make room)."""
        run = self._run
        return bool(self._sentences or run.synthesizing) and not run.waiting_for_room

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def pause(self) -> None:
        """Stop sending frames (within one frame), keeping everything queued."""
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    # -- playback position -------------------------------------------------------------------
    def played(self, position: float) -> None:
        """Playback reached `position` on the output timeline; stale positions are ignored."""
        self.tracker.advance_to(position)
        if position <= self._played:
            return
        self._played = position
        spans = self._spans
        while spans and spans[0].end <= position + _EPSILON:
            self._mark(spans.popleft().piece)

    def stop(self) -> str:
        """Barge-in: cancel TTS and playout, forget all pending text and audio, and record the
        words of the piece cut off midway as heard. Returns the text heard since the last stop.
        The caller clears the transport (first, so the caller's ear is freed at once)."""
        for task in self._run.tasks:
            task.cancel()
        self._run = _Run(self._queue_size)
        if self._spans:
            span = self._spans[0]
            if span.begin < self._played:
                heard = _words_heard(
                    span.piece.text, span.end - span.begin, self._played - span.begin
                )
                if heard:
                    self.delivery.mark(span.piece.turn.id, span.piece.start + len(heard))
        self._spans.clear()
        self._sentences.clear()
        self._unspoken = 0
        self._cut_turn = None
        self._chunker = self._new_chunker()
        self._turn = None
        self._resume.set()
        heard_text = self.tracker.clear()
        self._cursor = self._played = max(self._cursor, self._played)
        return heard_text

    async def close(self) -> None:
        tasks = self._run.tasks
        self._run = _Run(self._queue_size)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.unspoken_dropped or self.unconfirmed_dropped:
            log.warning(
                "speech given up in total",
                unspoken_sentences=self.unspoken_dropped,
                unconfirmed_pieces=self.unconfirmed_dropped,
            )

    def _mark(self, piece: _Piece) -> None:
        end = piece.end
        turn = piece.turn
        if turn.complete and not turn.content[end:].strip():
            end = len(turn.content)  # trailing whitespace is heard along with the last words
        self.delivery.mark(turn.id, end)

    # -- the two workers ---------------------------------------------------------------------
    def _start(self) -> None:
        run = self._run
        if not run.tasks:
            run.tasks = [
                asyncio.create_task(self._synthesize(run)),
                asyncio.create_task(self._play(run)),
            ]

    async def _synthesize(self, run: _Run) -> None:
        while True:
            while not self._sentences:
                self._has_text.clear()
                await self._has_text.wait()
            sentence = self._sentences.popleft()
            self._unspoken -= len(sentence.text)
            run.synthesizing = True
            chunks = self.tts.synthesize(sentence.text, voice=self.voice)
            counters.provider_request("tts", self.tts.label)
            try:
                offset = 0
                async for chunk in chunks:
                    pcm = resample(chunk.pcm, chunk.sample_rate, self.rate)
                    known = chunk.text or chunk.exact
                    found = sentence.text.find(chunk.text, offset) if known else -1
                    if found < 0:  # the TTS did not echo its text: credit the rest of the sentence
                        found, text = offset, sentence.text[offset:]
                    else:
                        text = chunk.text
                    offset = found + len(text)
                    if not len(pcm):
                        continue
                    self._on_audio()
                    start = sentence.start + found
                    run.waiting_for_room = run.audio.full()
                    await run.audio.put(_Piece(pcm, sentence.turn, text, start, start + len(text)))
                    run.changed.set()
                    run.waiting_for_room = False
            except Exception as exc:
                log.exception("speech synthesis failed", text=sentence.text)
                counters.provider_failure("tts", self.tts.label)
                self._on_error(exc)
            finally:
                run.synthesizing = False
                run.changed.set()
                # Stopped midway (barge-in): release the voice now; a hosted one cancels.
                with contextlib.suppress(Exception):
                    await _aclose(chunks)

    async def _play(self, run: _Run) -> None:
        while True:
            first = await run.audio.get()
            run.sending = True
            pacer = Pacer(
                self.rate, frame_duration=self.frame_duration, clock=self.clock, lead=self.lead
            )
            origin = sent_to = self._cursor
            async for frame in pacer.pace(self._stretch(first, run)):
                if not self._resume.is_set():
                    await self._resume.wait()
                out = AudioFrame(frame.pcm, self.rate, origin + frame.timestamp)
                await self.transport.send(out)
                if sent_to == origin:
                    self._on_play()
                sent_to = out.end
                if not self.transport.reports_playback:
                    self.played(out.end)
            self.underruns += pacer.underruns
            if sent_to > self._cursor + _EPSILON:  # the pacer padded the last frame
                self.tracker.add("", sent_to - self._cursor)
                self._cursor = sent_to
                if not self.transport.reports_playback:
                    self.played(sent_to)
            run.sending = False
            if not self.active:
                self._on_idle()

    async def _stretch(self, first: _Piece, run: _Run) -> AsyncIterator[npt.NDArray[np.int16]]:
        """Pieces while speech continues without a gap; ends when nothing more is on its way,
        so the pacer's timeline restarts (rather than bursting) when speech resumes later."""
        piece = first
        while True:
            end = self.tracker.add(piece.text, len(piece.pcm) / self.rate)
            if len(self._spans) >= MAX_UNCONFIRMED:
                self._spans.popleft()
                self.unconfirmed_dropped += 1
                if self.unconfirmed_dropped == 1:  # the total is logged at close
                    log.warning("playback not confirmed: oldest pieces forgotten")
            self._spans.append(_Span(self._cursor, end, piece))
            self._cursor = end
            yield piece.pcm
            while run.audio.empty():
                if not self._sentences and not run.synthesizing:
                    return
                run.changed.clear()
                await run.changed.wait()
            piece = run.audio.get_nowait()


async def _aclose(chunks: AsyncIterator[object]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


def _words_heard(text: str, duration: float, played: float) -> str:
    """The leading words of `text` heard after `played` of its `duration` seconds, weighted as
    the playback tracker weighs them."""
    probe = PlaybackTracker()
    probe.add(text, duration)
    probe.advance(played)
    return probe.heard_text()
