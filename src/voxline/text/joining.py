"""Joining the pieces of one spoken reply, and mapping what was heard back onto them.

A reply that calls a tool is spoken in pieces: the text of each model step (and any note said
in between) is its own bot turn, and the model writes each piece as if it stood alone. Sent to a
speech engine back to back, "Let me look that up." and "The result is ..." become "up.The", so
the joint between two pieces needs a space the model never wrote. The stored turns stay as the
model wrote them (no leading space), and only the streamed text carries the joint.

A channel that knows what the caller heard (ConversationRelay's `utteranceUntilInterrupt`)
reports it for the whole spoken reply, joints included; `heard_lengths` maps that back to how
much of each piece was heard, so an interruption trims every turn of the reply, not only the
last one.
"""

from __future__ import annotations

from collections.abc import Sequence

# A piece that starts with one of these continues the previous one ("..., and" / "!"): no space.
_NO_SPACE_BEFORE = frozenset(",.;:!?…)]}”’»%")


def separator(before: str, after: str) -> str:
    """What goes between `before` (the text spoken so far) and `after` (the next piece, as written).

    Nothing when nothing was spoken yet, when `before` already ends in whitespace, or when
    `after` opens with closing punctuation; the piece's own leading whitespace when it has some
    (a model's paragraph break stays one); otherwise a single space. Never a period: invented
    punctuation would make the spoken text differ from every recorded turn, and a piece boundary
    is already a pause for the speaker, which synthesises each bot turn on its own.
    """
    if not before or not after or before[-1].isspace():
        return ""
    lead = after[: len(after) - len(after.lstrip())]
    if lead:
        return lead
    if after[0] in _NO_SPACE_BEFORE:
        return ""
    return " "


def heard_lengths(heard: str, parts: Sequence[str]) -> list[int]:
    """How many characters of each of `parts` (spoken in order, joined by whitespace) `heard`
    covers. Comparison ignores case and treats any run of whitespace as a joint, so a channel
    that normalises spacing still lines up.

    If `heard` does not start at the first part but lines up with a later one (a channel that
    reports only its latest utterance), the parts before it count as heard. Where `heard` stops
    matching midway (the channel rewrote a word), the rest is shared out by length: an estimate,
    never more than was heard in total.
    """
    for first in range(len(parts)):
        walked = _walk(heard, parts[first:], strict=first > 0)
        if walked is not None:
            return [len(p) for p in parts[:first]] + walked
    return _by_length(len(heard.strip()), parts)


def _walk(heard: str, parts: Sequence[str], *, strict: bool) -> list[int] | None:
    """Exact (whitespace- and case-tolerant) mapping; None if the first part does not match
    from its first character (`strict`: from its first to its last, or to where heard ends)."""
    lengths: list[int] = []
    position = 0
    for index, part in enumerate(parts):
        position = _skip_space(heard, position)
        if position >= len(heard):
            lengths.append(0)
            continue
        matched, end, mismatch = _match(part, heard, position)
        if mismatch:
            if index == 0 and (strict or matched == 0):
                return None
            rest = _by_length(len(heard) - position, parts[index:])
            return lengths + rest
        lengths.append(matched)
        position = end
    return lengths


def _match(part: str, heard: str, start: int) -> tuple[int, int, bool]:
    """Compare `part` with `heard` from `start`. Returns (characters of `part` matched, where
    the match ended in `heard`, whether it stopped on a difference rather than an end)."""
    i, j = 0, start
    while i < len(part) and j < len(heard):
        if part[i].isspace() or heard[j].isspace():
            i = _skip_space(part, i)
            j = _skip_space(heard, j)
            continue
        if part[i].casefold() != heard[j].casefold():
            return i, j, True
        i += 1
        j += 1
    return i, j, False  # the part is done, or heard ran out inside it


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index


def _by_length(budget: int, parts: Sequence[str]) -> list[int]:
    """Share `budget` heard characters out over `parts` in order, one character per joint."""
    lengths: list[int] = []
    for part in parts:
        taken = max(0, min(budget, len(part)))
        lengths.append(taken)
        budget = budget - taken - 1 if taken == len(part) else 0
    return lengths
