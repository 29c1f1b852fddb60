"""The contract between the voice pipeline and an audio channel (phone, browser, speaker).

A channel does three things and nothing else: it hands the caller's audio to the pipeline as
PCM16 frames at its own rate (`VoicePipeline.push_audio`), it plays the frames the pipeline sends,
and it drops what it has queued when told to (`clear`). The pipeline does the rest: resampling,
turn taking, pacing and barge-in. So a new channel is a wire-format adapter, not a second pipeline.

Knowing what the caller heard is the part that differs between channels. A channel that plays a
frame the moment it gets it (a local sound card, a simulated call) sets `reports_playback = False`
and the pipeline counts a frame as played once `send` returns; frames are sent at real-time pace,
so that is accurate to a frame. A channel with a far-end buffer (Twilio Media Streams, WebRTC)
sets `reports_playback = True` and calls `VoicePipeline.played(position)` when the far end
confirms playback (a Twilio `mark` echo): `position` is the `end` of any frame it was sent, and
it may confirm every frame or only some, in order.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from voxline.audio.frames import AudioFrame


@runtime_checkable
class AudioTransport(Protocol):
    input_rate: int
    """Sample rate (Hz) of the mono PCM16 frames the channel passes to `push_audio`."""

    output_rate: int
    """Sample rate (Hz) the channel plays; the pipeline resamples TTS audio to it once."""

    reports_playback: bool
    """True when the channel calls `VoicePipeline.played(position)` itself (see module doc)."""

    async def send(self, frame: AudioFrame) -> None:
        """Queue one outbound frame (20 ms by default) for playing.

        `frame.timestamp` is where it starts on the pipeline's output timeline, in seconds, and
        `frame.end` is the position to confirm once it has played. The samples may be a view
        the pipeline reuses after this call returns: copy them if they are kept (encoding them
        to bytes is a copy). Called at real-time pace, so it must not block for long.
        """
        ...

    def clear(self) -> None:
        """Drop every frame queued and not yet played, at once (barge-in). Positions not yet
        confirmed are dropped with them: confirmations for them must not be sent afterwards,
        though a late one is harmless (the pipeline ignores positions it has moved past)."""
        ...
