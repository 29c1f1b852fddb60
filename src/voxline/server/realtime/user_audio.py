"""The user's side of a Realtime socket: appended audio, turns, committed items, transcripts.

Two ways to take turns, as in OpenAI's protocol. With server VAD (the default) every appended
chunk goes straight into the voice pipeline, whose own turn taking decides when the user spoke
and stopped; this module only reports it (`speech_started`, `speech_stopped`, `committed`, the
user item) and, when the pipeline's transcript becomes a user turn, completes that item's
transcript. With `turn_detection: null` the client decides: audio waits in a bounded buffer
until `input_audio_buffer.commit`, is transcribed with the agent's STT, and becomes a user turn
that the next `response.create` (which waits for it) answers.

A VAD utterance the pipeline never turns into a turn (a backchannel while the bot speaks, noise
with no words) still has its item; it gets an empty transcript when the next turn arrives, and
that turn's text goes to the newest item, which is the utterance it came from.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np
import structlog

from voxline.audio import resample
from voxline.audio.turn_taking import GateEvent, SpeechEnded, SpeechStarted
from voxline.conversation.turns import UserTurn
from voxline.providers.stt.base import PCM16
from voxline.server.realtime.audio import decode
from voxline.server.realtime.items import Item
from voxline.server.realtime.protocol import AudioAppend, ClientError

if TYPE_CHECKING:
    from voxline.server.realtime.bridge import RealtimeBridge

log = structlog.get_logger("voxline.realtime")

MIN_COMMIT_SECONDS = 0.1
MAX_BUFFER_SECONDS = 600.0
"""Ten minutes of uncommitted audio at most, so a client cannot make the server hoard memory."""


class InputAudio:
    def __init__(self, bridge: RealtimeBridge) -> None:
        self.bridge = bridge
        self._buffer: list[PCM16] = []
        self._buffered = 0  # samples
        self._speech: Item | None = None  # the item of the utterance VAD is hearing now
        self._awaiting: list[Item] = []  # VAD items whose transcript has not come yet
        self._transcribing: set[asyncio.Task[None]] = set()

    @property
    def busy(self) -> bool:
        return bool(self._transcribing)

    def pending(self) -> list[asyncio.Task[None]]:
        """Transcriptions a response must wait for (their turns come before it)."""
        return list(self._transcribing)

    # -- client events ------------------------------------------------------------------------
    async def append(self, event: AudioAppend) -> None:
        config = self.bridge.config
        pcm = decode(event.audio, config.input_format)
        call = await self.bridge.ensure_call()
        if config.turn_detection is not None:
            call.pipeline.push_audio(pcm)
            return
        rate = config.input_format.rate
        if (self._buffered + len(pcm)) / rate > MAX_BUFFER_SECONDS:
            raise ClientError(
                "input_audio_buffer_full",
                f"the input audio buffer holds at most {MAX_BUFFER_SECONDS:.0f} s; "
                "commit or clear it",
                param="audio",
            )
        self._buffer.append(pcm)
        self._buffered += len(pcm)

    async def commit(self) -> None:
        config = self.bridge.config
        call = await self.bridge.ensure_call()
        if config.turn_detection is not None and call.pipeline.listener.user_speaking:
            call.pipeline.end_input()  # the utterance ends now; VAD events report it
            return
        rate = config.input_format.rate
        if self._buffered < MIN_COMMIT_SECONDS * rate:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms "
                f"of audio, but buffer only has {self._buffered * 1000 / rate:.2f}ms of audio.",
            )
        pcm = np.concatenate(self._buffer)
        self.reset()
        item = Item.user_audio()
        item.audio_seconds = len(pcm) / rate
        previous = self.bridge.items.add(item)
        self.bridge.emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item.id)
        self.bridge.announce_added(item, previous)
        self.transcribe(item, pcm, rate)

    def clear(self) -> None:
        self.reset()
        self.bridge.emit("input_audio_buffer.cleared")

    def reset(self) -> None:
        self._buffer = []
        self._buffered = 0

    # -- transcription ------------------------------------------------------------------------
    def transcribe(self, item: Item, pcm: PCM16, rate: int) -> None:
        """Transcribe committed or created audio into a user turn, in the background."""
        task = self.bridge.tasks.spawn(self._transcribe(item, pcm, rate), name="transcribe")
        self._transcribing.add(task)
        task.add_done_callback(self._transcribing.discard)

    async def _transcribe(self, item: Item, pcm: PCM16, rate: int) -> None:
        call = self.bridge.call
        if call is None:
            return
        stt = call.speech.stt
        language = call.session.spec.language.split("-")[0].lower() or None
        try:
            transcript = await stt.transcribe(
                resample(pcm, rate, stt.sample_rate), language=language
            )
        except Exception as exc:
            log.exception("transcription failed")
            error = {"type": "server_error", "code": "transcription_failed", "message": str(exc)}
            self.bridge.emit(
                "conversation.item.input_audio_transcription.failed",
                item_id=item.id,
                content_index=0,
                error=error,
            )
            return
        text = transcript.text.strip()
        if text:
            item.turn_ids.append(self.bridge.add_user_text(text).id)
        self._completed(item, text)

    def transcribed(self, turn: UserTurn) -> None:
        """The pipeline made a user turn of what VAD heard: complete its item's transcript."""
        waiting, self._awaiting = self._awaiting, []
        if not waiting:  # a turn no VAD event announced (an utterance cut by end of input)
            item = Item.user_audio()
            self.bridge.announce_added(item, self.bridge.items.add(item))
            waiting = [item]
        for older in waiting[:-1]:
            self._completed(older, "")
        newest = waiting[-1]
        newest.turn_ids.append(turn.id)
        self._completed(newest, turn.content)
        self.bridge.replies.absorb_next_create = False  # new input: the next response.create is new

    def _completed(self, item: Item, text: str) -> None:
        item.text = text
        if self.bridge.config.transcription is None:
            return  # the client did not ask for transcripts
        self.bridge.emit(
            "conversation.item.input_audio_transcription.completed",
            item_id=item.id,
            content_index=0,
            transcript=text,
            usage={"type": "duration", "seconds": round(item.audio_seconds, 3)},
        )

    # -- server VAD, from the pipeline's turn taking ------------------------------------------
    def on_gate(self, event: GateEvent) -> None:
        call = self.bridge.call
        offset = call.gate_offset if call is not None else 0.0
        if isinstance(event, SpeechStarted):
            self._speech = Item.user_audio()
            self.bridge.emit(
                "input_audio_buffer.speech_started",
                audio_start_ms=round((event.t + offset) * 1000),
                item_id=self._speech.id,
            )
        elif isinstance(event, SpeechEnded):
            item, self._speech = self._speech or Item.user_audio(), None
            item.audio_seconds = event.audio.duration
            self.bridge.emit(
                "input_audio_buffer.speech_stopped",
                audio_end_ms=round((event.speech_end + offset) * 1000),
                item_id=item.id,
            )
            previous = self.bridge.items.add(item)
            self.bridge.emit(
                "input_audio_buffer.committed", previous_item_id=previous, item_id=item.id
            )
            self.bridge.announce_added(item, previous)
            self._awaiting.append(item)
