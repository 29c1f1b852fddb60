"""Cut streaming text into speakable chunks: whole sentences, and long sentences at clauses.

Text-to-speech can start as soon as the first sentence is known, so the voice pipeline feeds the
LLM stream through `SentenceChunker` and synthesises each chunk as it completes. A sentence that
runs past `max_chars` is cut at its last clause boundary (`,` `;` `:` or a dash) that fits, so a
rambling first sentence does not hold back the first audio.

The first chunk of a reply is what the caller waits for, so with `first_words` it is cut
earlier: at the first sentence end or clause end (",", ";", ":", a dash), or, when the first words
run on without either, just before a conjunction or preposition ("and", "because", "with", ...)
that comes after at least `first_words` words, which is where a speaker would breathe; past
twice `first_words` words with no such break it is cut at the next word that can end a phrase
(not an article, a possessive or a pronoun). Later chunks are whole
sentences again, so only the opening phrase is synthesised on its own.

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
_WORD = re.compile(r"\S+")
_DASHES = frozenset({"-", "–", "—"})
_BREAK_WORDS = frozenset(
    {
        "and", "but", "or", "so", "because", "since", "which", "who", "whose", "that", "when",
        "where", "while", "if", "unless", "until", "though", "although", "whereas", "with",
        "without", "for", "to", "in", "on", "at", "from", "about", "as", "than", "after",
        "before", "during", "like", "by", "of", "into", "over", "under", "through",
    }
)  # fmt: skip
_DANGLING = frozenset(
    {
        "a",
        "an",
        "the",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "this",
        "that",
        "these",
        "those",
        "some",
        "any",
        "very",
        "more",
        "most",
        "not",
        "no",
        "i",
        "we",
        "you",
    }
)  # a phrase never ends on these: the forced first cut moves past them
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "approx"}
)

DEFAULT_MAX_CHARS = 120
DEFAULT_MIN_CLAUSE_CHARS = 24


class SentenceChunker:
    """Incremental splitter: `feed` returns the chunks completed so far, `flush` the rest.

    `max_chars` bounds a chunk's length; `min_clause_chars` keeps clause cuts from producing
    fragments too short to sound natural. `first_words`: cut the first chunk at its first
    clause or natural break after this many words (see the module doc); None: whole sentences
    from the start.
    """

    def __init__(
        self,
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
        min_clause_chars: int = DEFAULT_MIN_CLAUSE_CHARS,
        first_words: int | None = None,
    ) -> None:
        if max_chars < 2 or not 0 < min_clause_chars < max_chars:
            raise ValueError("need 0 < min_clause_chars < max_chars")
        if first_words is not None and first_words < 1:
            raise ValueError("first_words must be at least 1")
        self._max = max_chars
        self._min_clause = min_clause_chars
        self._first_words = first_words
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
            if self._first_words is not None and self._buffer:
                end = self._first_cut(self._first_words)
            else:
                end = self._sentence_end()
            if end is None or end > self._max:
                if len(self._buffer) <= self._max:
                    return chunks
                end = self._clause_cut()
            chunk = self._buffer[:end].strip()
            self._buffer = self._buffer[end:]
            if chunk:
                chunks.append(chunk)
                self._first_words = None  # the opening phrase is out: whole sentences now

    def _first_cut(self, after: int) -> int | None:
        """Where the first chunk ends, if that is already certain: the earliest of the first
        sentence end, the first clause end, a break before a conjunction or preposition that
        follows at least `after` words, and the end of word `2 * after`. Only words followed by
        whitespace count, so a word still being written is never judged."""
        sentence = self._sentence_end()
        limit = len(self._buffer) if sentence is None else sentence
        for index, word in enumerate(_WORD.finditer(self._buffer)):
            if word.start() >= limit:
                break
            if word.end() >= len(self._buffer):
                return sentence  # the word may go on: nothing after it is decided yet
            text = word.group()
            if index >= after and text.lower() in _BREAK_WORDS:
                return word.start()
            if text[-1] in ",;:" or (text in _DASHES and index > 0):
                return word.end()
            if index + 1 >= 2 * after and text.lower() not in _DANGLING:
                return word.end()
        return sentence

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
    first_words: int | None = None,
) -> list[str]:
    """Split a whole text the way the streaming chunker would."""
    chunker = SentenceChunker(
        max_chars=max_chars, min_clause_chars=min_clause_chars, first_words=first_words
    )
    return chunker.feed(text) + chunker.flush()
