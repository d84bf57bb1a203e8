"""Split a document into overlapping passages for retrieval. Pure.

The text is read as a sequence of words, each knowing how strong a break lies before it: a
Markdown heading (a new section), a new paragraph, a new sentence or line, or just a space. A
chunk takes as many words as fit in ``size`` characters and then ends at the strongest break it
can, so passages are whole sections, paragraphs or sentences where the text allows:

* before a heading, if the chunk is at least :data:`_MIN_FILL_SECTION` full;
* else after a paragraph, or else after a sentence, if the chunk is at least half full;
* else after any word (a word longer than ``size`` is cut into ``size``-long pieces).

The next chunk starts about ``overlap`` characters before the end of the previous one, at a
sentence start if one lies in that window, else at a word, so a passage cut between two chunks
is whole in at least one of them. A chunk that begins a new section (at a heading) repeats
nothing of the previous section: its ``section`` is then exactly right.

Chunk text is normalised: runs of spaces and tabs become one space, lines within a paragraph
are joined by one newline and paragraphs by a blank line (lists, tables and code keep their
lines). ``start`` is the offset of the chunk's first character in the *original* text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

_Length = Callable[[int, int], int]  # characters of words i..j-1 joined

_WORD_GAP: Final = 0  # a space between two words on a line
_LINE: Final = 1  # a new line, or a new sentence
_PARAGRAPH: Final = 2
_SECTION: Final = 3  # a Markdown heading starts here
_INSIDE: Final = -1  # a cut inside a word longer than the chunk size

_MIN_FILL_SECTION: Final = 0.15  # a heading is a good place to end, unless the chunk is tiny
_MIN_FILL_BREAK: Final = 0.5  # paragraph and sentence ends: only when the chunk is half full

_FENCE: Final = re.compile(r" {0,3}(```|~~~)")
# A line that starts a list item, a table row, a quote: a structural line, not wrapped prose.
_STRUCTURED_LINE: Final = re.compile(r"\s*(?:[-*+•]\s|\d{1,3}[.)]\s|\||>)")
_STOPS: Final = ".!?\u2026\u3002\uff01\uff1f"  # and the ellipsis, CJK full stop, ! and ?
# after a full stop: quotes, brackets, emphasis
_CLOSERS: Final = "\"'\u201d\u2019\u00bb)]*_`"
# Abbreviations that end in a full stop without ending a sentence.
_ABBREVIATIONS: Final = frozenset(
    "e.g. i.e. etc. vs. mr. mrs. ms. dr. st. no. fig. approx. cf. inc. ltd. jr. sr. a.m. p.m. "
    "al. resp. dept. est. min. max.".split())


@dataclass(frozen=True, slots=True)
class Chunk:
    """One passage: its normalised ``text``, the offset of its first character in the original
    text, its position among the document's chunks, and the text of the nearest Markdown
    heading before it ("" if none)."""

    text: str
    start: int
    index: int
    section: str


@dataclass(frozen=True, slots=True)
class _Word:
    text: str
    start: int
    level: int  # the strength of the break before this word
    separator: str  # what joins it to the word before in chunk text


def markdown_heading(line: str) -> tuple[int, str] | None:
    """An ATX heading line ("## Install ##") as (level, title); None for any other line. (By
    hand, not by regular expression: a pattern for the optional closing "#"s backtracks
    quadratically on long runs of spaces.)"""
    indent = len(line) - len(line.lstrip(" "))
    rest = line[indent:].rstrip()
    hashes = len(rest) - len(rest.lstrip("#"))
    if indent > 3 or not 1 <= hashes <= 6 or rest[hashes:hashes + 1] not in ("", " ", "\t"):
        return None
    title = rest[hashes:].strip()
    closed = title.rstrip("#")
    if not closed or closed[-1] in " \t":  # a closing sequence, or a title of only "#"s
        title = closed.rstrip()
    return hashes, title


def _ends_sentence(word: str, following: str) -> bool:
    """Whether ``word`` ends a sentence, given the word after it. Returns a bool."""
    core = word.rstrip(_CLOSERS)
    if not core or core[-1] not in _STOPS:
        return False
    if core[-1] == "." and not core.endswith(".."):
        if core.lower() in _ABBREVIATIONS or re.fullmatch(r"(?:\w\.)+", core):
            return False  # "e.g.", an initial ("J."), "U.S.", a list number ("1.")
        # "see fig. 3", "the .env file": a full stop before a lower-case word rarely ends one
        if following[:1].islower():
            return False
    return True


def _words(text: str, size: int) -> tuple[list[_Word], list[tuple[int, str]]]:
    """Read ``text`` into words with the break before each, and its headings as (offset, title).
    Words longer than ``size`` come back as ``size``-long pieces. Returns both lists."""
    words: list[_Word] = []
    headings: list[tuple[int, str]] = []
    offset = 0
    in_fence = False
    pending = _PARAGRAPH  # the break before the next line: the text starts a paragraph
    for line in text.splitlines(keepends=True):
        line_start = offset
        offset += len(line)
        if not line.strip():
            pending = _PARAGRAPH
            continue
        fence = _FENCE.match(line)
        heading = None if in_fence or fence else markdown_heading(line)
        if heading:
            headings.append((line_start, heading[1]))
            level = _SECTION
        elif fence and not in_fence:
            level = max(pending, _PARAGRAPH)  # a code block is a paragraph of its own
        elif in_fence or _STRUCTURED_LINE.match(line):
            level = max(pending, _LINE)  # code, lists and tables keep their lines
        else:
            level = pending  # wrapped prose: the line break is one more space
        # a line of code, a list or a table starts on a line of its own in the chunk text
        line_separator = "\n\n" if level >= _PARAGRAPH else "\n" if level >= _LINE else " "
        separator = line_separator if words else ""
        for match in re.finditer(r"\S+", line):
            word = match.group()
            if words and level < _LINE and _ends_sentence(words[-1].text, word):
                level = _LINE
            _add_word(words, word, line_start + match.start(), level, separator, size)
            level, separator = _WORD_GAP, " "
        if fence:
            in_fence = not in_fence
        # after a heading or a closing fence, a new paragraph; inside a block, a new line
        pending = _PARAGRAPH if heading or (fence and not in_fence) else _WORD_GAP
    return words, headings


def _add_word(words: list[_Word], word: str, start: int, level: int, separator: str,
              size: int) -> None:
    """Append ``word``, cut into ``size``-long pieces if it is longer than a chunk."""
    words.append(_Word(word[:size], start, level, separator))
    for cut in range(size, len(word), size):
        words.append(_Word(word[cut:cut + size], start + cut, _INSIDE, ""))


def chunk_text(text: str, size: int, overlap: int) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``size`` characters, consecutive chunks sharing
    about ``overlap`` characters (see the module docstring). Returns the chunks in order; none
    if the text is blank. Raises ValueError if ``size`` < 1, ``overlap`` < 0 or
    ``overlap`` >= ``size``."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, not {size}")
    if overlap < 0 or overlap >= size:
        raise ValueError(f"chunk overlap must be at least 0 and less than the size ({size}), "
                         f"not {overlap}")
    words, headings = _words(text, size)
    n = len(words)
    # ends[k]: length of the words before k joined with their separators, so the text of
    # words i..j-1 is ends[j] - ends[i] - len(separator of word i) characters long.
    ends = [0] * (n + 1)
    for k, word in enumerate(words):
        ends[k + 1] = ends[k] + len(word.separator) + len(word.text)

    def length(i: int, j: int) -> int:
        return ends[j] - ends[i] - len(words[i].separator)

    heading_offsets = [offset for offset, _ in headings]
    chunks: list[Chunk] = []
    start = 0
    while start < n:
        limit = start + 1  # every word fits: longer ones were cut to `size`
        while limit < n and length(start, limit + 1) <= size:
            limit += 1
        end = limit if limit == n else _best_end(words, start, limit, size, length)
        body = "".join(
            (w.separator if k > start else "") + w.text for k, w in enumerate(words[start:end],
                                                                             start))
        first = words[start].start
        where = bisect.bisect_right(heading_offsets, first) - 1
        section = headings[where][1] if where >= 0 else ""
        chunks.append(Chunk(text=body, start=first, index=len(chunks), section=section))
        if end == n:
            break
        start = _next_start(words, start, end, size, overlap, length)
    return chunks


def _best_end(words: list[_Word], start: int, limit: int, size: int,
              length: _Length) -> int:
    """Where a chunk from ``start`` that could take words up to ``limit`` (exclusive) should
    end: the latest strongest break that leaves it full enough. Returns an exclusive index."""
    for level, fill in ((_SECTION, _MIN_FILL_SECTION), (_PARAGRAPH, _MIN_FILL_BREAK),
                        (_LINE, _MIN_FILL_BREAK), (_WORD_GAP, 0.0)):
        for cut in range(limit, start, -1):
            if words[cut].level >= level:
                if length(start, cut) >= fill * size:
                    return cut
                break  # earlier breaks of this strength leave the chunk even emptier
    return limit  # only pieces of one long word: cut it


def _next_start(words: list[_Word], start: int, end: int, size: int, overlap: int,
                length: _Length) -> int:
    """Where the chunk after words ``start``..``end`` begins: back by at most ``overlap``
    characters, at a sentence if that keeps at least half of it, else at a word, and never so
    far back that the next chunk could not take a new word. Returns a word index."""
    if words[end].level == _SECTION or overlap == 0:
        return end

    def fits(cut: int) -> bool:
        return length(cut, end) <= overlap and length(cut, end + 1) <= size

    candidates = [cut for cut in range(start + 1, end)
                  if words[cut].level >= _WORD_GAP and fits(cut)]
    if not candidates:
        return end
    sentences = [cut for cut in candidates if words[cut].level >= _LINE]
    if sentences and length(sentences[0], end) >= overlap / 2:
        return sentences[0]
    return candidates[0]


def tidy_paragraphs(text: str) -> str:
    """Tidy extracted text: spaces collapsed and trimmed on each line, at most one blank line
    between paragraphs, none at either end. Returns the text."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n")
