"""Call-control tools a ConversationRelay agent can use: hang up, transfer, dial, switch
language, play a sound.

They are built per agent (only what its options enable) and find the live call by the
connection of the session that runs them, so one set of tool objects serves every call of that
agent and two calls from one number each control only themselves. They are coroutines, so
they run on the event loop that owns the call (a plain function tool runs in a worker thread,
and a call's queues, tasks and turns are not for other threads).

`end_call_tool` and `transfer_tool` are the definitions the model sees (name, docstring,
arguments) for every channel that can end or transfer a call: each channel passes only what
doing it means there, so the model is told the same thing on every channel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Protocol, TypeVar

from voxline.agents.spec import AgentSpec
from voxline.agents.twilio import TwilioOptions
from voxline.channels.twilio_relay import RelayCall
from voxline.conversation.session import Session
from voxline.tools.base import RunContext, Tool
from voxline.tools.decorator import FunctionTool

HANDOFF_REASON_CODE = "live-agent-handoff"
END_CALL_REASON_CODE = "end-call"
_DIGITS = re.compile(r"^[0-9*#w]{1,64}$")
NO_CALL = "There is no call in progress, so this cannot be done here."


class ControlledCall(Protocol):
    """What the shared tools need of a call: the session it speaks for."""

    @property
    def session(self) -> Session: ...


C = TypeVar("C", bound=ControlledCall)
# Finds the live call of a connection id (None when that connection is no such call).
Calls = Callable[[str], C | None]
RelayCalls = Callable[[str], RelayCall | None]


def _call_of(calls: Calls[C], ctx: RunContext) -> C | None:
    connection = getattr(ctx.session, "connection_id", None)
    return calls(connection) if isinstance(connection, str) else None


def end_call_tool(calls: Calls[C], end: Callable[[C, str], None]) -> Tool:
    """`end_call`; `end(call, reason)` ends the call once what the agent is saying is heard."""

    async def end_call(reason: str, ctx: RunContext) -> str:
        """Hang up once your current sentence is spoken. Use it only when the caller is done
        or asks to end the call; say goodbye first.

        Args:
            reason: Why the call ends, in a few words.
        """
        call = _call_of(calls, ctx)
        if call is None:
            return NO_CALL
        end(call, reason)
        return "The call will end after your goodbye."

    return FunctionTool(end_call)


def transfer_tool(calls: Calls[C], transfer: Callable[[C, dict[str, str]], None]) -> Tool:
    """`transfer_to_human`: records the handoff turn, then `transfer(call, handoff data)` hands
    the call over once what the agent is saying is heard."""

    async def transfer_to_human(reason: str, ctx: RunContext) -> str:
        """Transfer the caller to a human colleague. Use it when the caller asks for a person
        or you cannot help; tell them you are transferring them.

        Args:
            reason: Why the caller needs a human, for the colleague who picks up.
        """
        call = _call_of(calls, ctx)
        if call is None:
            return NO_CALL
        data = {
            "reasonCode": HANDOFF_REASON_CODE,
            "reason": reason,
            "conversationId": ctx.conversation_id,
        }
        call.session.turns.add_handoff("human", reason, data)
        transfer(call, data)
        return "The transfer starts after your sentence; say you are transferring them."

    return FunctionTool(transfer_to_human)


def relay_tools(spec: AgentSpec, options: TwilioOptions, calls: RelayCalls) -> list[Tool]:
    """The tools `options` enable; `calls` finds a live call by its session's connection."""
    tools: list[Tool] = []

    if options.end_call:

        def end(call: RelayCall, reason: str) -> None:
            call.request_end(json.dumps({"reasonCode": END_CALL_REASON_CODE, "reason": reason}))

        tools.append(end_call_tool(calls, end))

    if options.transfer_to:
        tools.append(transfer_tool(calls, lambda call, data: call.request_end(json.dumps(data))))

    if options.send_digits:

        async def send_digits(digits: str, ctx: RunContext) -> str:
            """Press keys on the phone line, e.g. to navigate another company's phone menu.

            Args:
                digits: Keys to press: 0-9, * and #; w waits half a second.
            """
            call = _call_of(calls, ctx)
            if call is None:
                return NO_CALL
            if not _DIGITS.match(digits):
                return "digits may contain only 0-9, *, # and w (up to 64)"
            call.send_digits(digits)
            return f"Pressed {digits}."

        tools.append(FunctionTool(send_digits))

    codes = options.language_codes(spec)
    if len(codes) > 1:

        async def switch_language(language: str, ctx: RunContext) -> str:
            """Switch the language you speak and listen in, when the caller prefers another one.
            Reply in that language from then on.

            Args:
                language: A BCP-47 code of a language this line supports.
            """
            call = _call_of(calls, ctx)
            if call is None:
                return NO_CALL
            if language not in codes:
                return f"unsupported language {language!r}; supported: {', '.join(codes)}"
            call.set_language(language)
            return f"Now speaking {language}."

        tools.append(FunctionTool(switch_language))

    sounds = dict(options.sounds)
    if sounds:

        async def play_sound(name: str, ctx: RunContext) -> str:
            """Play one of this line's recorded sounds to the caller.

            Args:
                name: The sound's name.
            """
            call = _call_of(calls, ctx)
            if call is None:
                return NO_CALL
            source = sounds.get(name)
            if source is None:
                return f"unknown sound {name!r}; available: {', '.join(sorted(sounds))}"
            call.play(source)
            return f"Playing {name}."

        play_sound.__doc__ = (play_sound.__doc__ or "").replace(
            "The sound's name.", f"One of: {', '.join(sorted(sounds))}."
        )
        tools.append(FunctionTool(play_sound))

    return tools
