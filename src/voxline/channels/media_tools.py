"""Call control where voxline speaks itself: Twilio Media Streams and the browser.

The tool definitions are the ConversationRelay ones (`relay_tools`), so the model is told the
same thing on every channel; only what they do differs. On these channels our own pipeline
speaks, so "after the goodbye" means after the pipeline's speaker has gone quiet with every
frame confirmed played (`until_said`), not after a talk cycle Twilio closes for us.

Only what a channel can really do is offered:

- Media Streams: `end_call` always (with Twilio credentials the call is hung up over REST;
  without them closing the stream ends it, since nothing follows `<Connect>` in our TwiML),
  `transfer_to_human` when the agent has `transfer_to` and credentials are set (a `<Dial>`
  needs a REST update). Not `send_digits`: a call update replaces the running `<Connect>`, so
  `<Play digits>` would end the stream. Not `switch_language` or `play_sound`: those are
  ConversationRelay features.
- The browser: `end_call` only; there is nobody to transfer to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

import structlog

from voxline.agents.twilio import TwilioOptions
from voxline.channels.relay_tools import Calls, ControlledCall, end_call_tool, transfer_tool
from voxline.tools.base import Tool
from voxline.voice.pipeline import VoicePipeline

log = structlog.get_logger("voxline.call_control")

GOODBYE_LIMIT = 20.0
"""Seconds the rest of a reply and its playback may take before the call ends regardless (a
far end that stops confirming playback must not keep a finished call open)."""
_POLL = 0.05


class EndableCall(ControlledCall, Protocol):
    def request_end(self, reason: str) -> None:
        """End the call once what the agent is saying has been heard."""
        ...


class TransferableCall(EndableCall, Protocol):
    def request_transfer(self, target: str) -> None:
        """Hand the call to `target` once what the agent is saying has been heard."""
        ...


async def until_said(pipeline: VoicePipeline, limit: float = GOODBYE_LIMIT) -> bool:
    """Wait until the reply in flight is finished and all of it has played (the far end has
    confirmed every frame), at most `limit` seconds; False when the limit ran out.

    Polled, because "quiet" is several conditions (the model, TTS, frames in flight) that
    have no single event, and an end of call can afford 50 ms."""
    try:
        async with asyncio.timeout(limit):
            while pipeline.bot_active:  # noqa: ASYNC110 (no single event to wait on)
                await asyncio.sleep(_POLL)
    except TimeoutError:
        log.warning("the goodbye did not finish playing in time; ending anyway", limit=limit)
        return False
    return True


async def read_until_over(reading: Coroutine[Any, Any, None], over: asyncio.Event) -> None:
    """Run a socket's reading loop until it ends (the far end left) or `over` is set (the agent
    ended the call), whichever comes first; a failure of the loop is re-raised."""
    reader = asyncio.create_task(reading)
    ended = asyncio.create_task(over.wait())
    try:
        await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        reader.cancel()
        ended.cancel()
        await asyncio.gather(reader, ended, return_exceptions=True)
    if not reader.cancelled():
        reader.result()


def media_tools(
    options: TwilioOptions, calls: Calls[TransferableCall], *, rest: bool
) -> list[Tool]:
    """The Media Streams call-control tools `options` enable; `rest`: Twilio credentials are
    set, so calls can be updated over REST (without them a transfer cannot work)."""
    tools: list[Tool] = []
    if options.end_call:
        tools.append(end_call_tool(calls, _end))
    target = options.transfer_to
    if target and rest:
        tools.append(transfer_tool(calls, lambda call, data: call.request_transfer(target)))
    return tools


def browser_tools(options: TwilioOptions, calls: Calls[EndableCall]) -> list[Tool]:
    """The browser's call-control tools: `end_call`, unless the agent turned it off (the
    switch is in its phone settings, and means the same here)."""
    return [end_call_tool(calls, _end)] if options.end_call else []


def _end(call: EndableCall, reason: str) -> None:
    call.request_end(reason)
