"""Server events waiting for the socket: one ordered queue, bounded like every channel's.

One queue keeps audio and events in order (a `response.done` must follow the audio deltas it
ends, and a barge-in must take back the audio not yet sent, at once, as `AudioTransport.clear`
requires). It is the channels' `BoundedOutbox`, so a slow client is handled as on any call:
audio deltas wait for room (backpressure into the paced speaker, never a hole mid-speech),
transcript and text deltas give way oldest first (the `.done` events carry the whole text), the
protocol's other events are never dropped, and a client that reads nothing for `STALL_SECONDS`
is given up on (`on_abandon`: the socket is closed).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from voxline.channels.outbox import BoundedOutbox

log = structlog.get_logger("voxline.realtime")

OUTBOX_LIMIT = 200
"""Events queued at most: ten seconds of 50 ms audio deltas, far more than a reading client
ever has waiting (audio is paced at real time)."""
ESSENTIAL_RESERVE = 64
"""Room beyond the limit for events the protocol cannot do without (a response's closing
events), so a queue full of audio never loses one."""
STALL_SECONDS = 5.0
DROPPABLE = frozenset({"response.output_audio_transcript.delta", "response.output_text.delta"})

Entry = tuple[str, bool]  # (event JSON, is an audio delta)


class Outbox(BoundedOutbox[Entry]):
    def __init__(
        self,
        limit: int = OUTBOX_LIMIT,
        *,
        reserve: int = ESSENTIAL_RESERVE,
        on_abandon: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            "realtime",
            limit=limit,
            reserve=reserve,
            stall=STALL_SECONDS,
            on_abandon=on_abandon,
            log=log,
        )

    def put(self, event: str, *, droppable: bool = False) -> None:
        """Queue an event now (never waits)."""
        self.offer((event, False), essential=not droppable)

    async def audio(self, event: str) -> bool:
        """Queue an audio delta, waiting for room; False when it was not queued (cleared by a
        barge-in while waiting, closed, or the client was given up on)."""
        return await self.push((event, True))

    def drop_audio(self) -> int:
        """Take back every queued audio delta (other events stay); returns how many went."""
        return self.remove_if(lambda entry: entry[1])
