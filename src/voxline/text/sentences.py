"""Cut streaming text into speakable chunks: whole sentences, and long sentences at clauses.

Text-to-speech can start as soon as the first sentence is known, so the voice pipeline feeds the
LLM stream through `SentenceChunker` and synthesises each chunk as it completes. A sentence that
runs past `max_chars` is cut at its last clause boundary (`,` `;` `:` or a dash) that fits, so a
rambling first sentence does not hold back the first audio.

Every decision looks only at text already seen and at a bounded prefix of the pending buffer, so
feeding the text one character at a time gives exactly the chunks that feeding it at once gives.
"""

from __future__ import annotations

import re

_TERMINATORS = ".!?…"
_CLOSERS = "\"')]}”’»"
# A sentence ends at terminators (possibly repeated, possibly closed by quotes or brackets)
# followed by whitespace, or at a line break. The whitespace must be seen: "3.5" is no end.
_SENTENCE_END = re.compile(rf"[{re.escape(_TERMINATORS)}]+[{re.escape(_CLOSERS)}]*(?=\s)|\n")
_CLAUSE_END = re.compile(r"[,;:](?=\s)|\s[—–-](?=\s)")
_WORD_BEFORE = re.compile(r"(\S+)$")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "approx"}
)

DEFAULT_MAX_CHARS = 120
DEFAULT_MIN_CLAUSE_CHARS = 24


class SentenceChunker:
    """Incremental splitter: `feed` returns the chunks completed so far, `flush` the rest.

    `max_chars` bounds a chunk's length; `min_clause_chars` keeps clause cuts from producing
    fragments too short to sound natural.
    """

    def __init__(
        self,
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
        min_clause_chars: int = DEFAULT_MIN_CLAUSE_CHARS,
    ) -> None:
        if max_chars < 2 or not 0 < min_clause_chars < max_chars:
            raise ValueError("need 0 < min_clause_chars < max_chars")
        self._max = max_chars
        self._min_clause = min_clause_chars
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """Add streamed text; return the chunks it completed (often none)."""
        self._buffer += delta
        return self._drain()

    def flush(self) -> list[str]:
        """End of the stream: return whatever is left, cut to `max_chars` like the rest."""
        chunks = self._drain()
        rest = self._buffer.strip()
        self._buffer = ""
        if rest:
            chunks.append(rest)
        return chunks

    def _drain(self) -> list[str]:
        chunks: list[str] = []
        while True:
            self._buffer = self._buffer.lstrip()
            end = self._sentence_end()
            if end is None or end > self._max:
                if len(self._buffer) <= self._max:
                    return chunks
                end = self._clause_cut()
            chunk = self._buffer[:end].strip()
            self._buffer = self._buffer[end:]
            if chunk:
                chunks.append(chunk)

    def _sentence_end(self) -> int | None:
        """Index just past the first sentence end in the buffer, if one is already certain."""
        for match in _SENTENCE_END.finditer(self._buffer):
            if match.group() == "\n" or not self._is_false_end(match.start()):
                return match.end()
        return None

    def _is_false_end(self, index: int) -> bool:
        """A period after an abbreviation, an initial, or a bare list number ("1. ") is no end."""
        if self._buffer[index] != ".":
            return False
        found = _WORD_BEFORE.search(self._buffer, 0, index)
        if found is None:
            return False
        word = found.group(1).lstrip(_CLOSERS + "(\"'“‘«")
        if word.lower() in _ABBREVIATIONS:
            return True
        if len(word) == 1 and word.isalpha() and word.isupper():
            return True
        return word.isdigit() and found.start() == 0

    def _clause_cut(self) -> int:
        """Where to cut an over-long sentence: the last clause end that fits, else a space."""
        window = self._buffer[: self._max + 1]
        cut = None
        for match in _CLAUSE_END.finditer(window):
            if match.end() > self._max:
                break
            if match.end() >= self._min_clause:
                cut = match.end()
        if cut is not None:
            return cut
        space = window.rfind(" ", self._min_clause)
        return space if space > 0 else self._max


def split_sentences(
    text: str,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    min_clause_chars: int = DEFAULT_MIN_CLAUSE_CHARS,
) -> list[str]:
    """Split a whole text the way the streaming chunker would."""
    chunker = SentenceChunker(max_chars=max_chars, min_clause_chars=min_clause_chars)
    return chunker.feed(text) + chunker.flush()
