"""Retrieved passages as a chat message and a response header. Pure.

:func:`rag_block` makes one system message whose content is exactly::

    <ailb-context>
    Use the following retrieved passages if they help answer; cite sources by their [n].

    [1] source: guide.md | section: Installing
    text of the best passage...

    [2] source: faq.md
    text of the next passage...
    </ailb-context>

Passages come in rank order, numbered from 1; `` | section: ...`` is left out when the passage
has no section. Sources and sections are kept to one line. A passage that quotes the delimiter
tags gets them defused (``<`` becomes ``&lt;``), so a document cannot close the block early and
pose as instructions after it. The whole content is at most ``max_chars`` characters: passages
are added while they fit, the first that does not is cut (ending with ``…``) if a useful part
of it fits, and the rest are left out. The frame (tags and instruction) is always there.

:func:`sources_header` is the value of the ``x-ailb-rag-sources`` response header: the
distinct document ids of the passages that made it into the block, in rank order,
comma-separated; each id percent-encoded (RFC 3986 unreserved characters kept), so commas and
non-ASCII characters in ids cannot break the list or the header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

OPEN: Final = "<ailb-context>"
CLOSE: Final = "</ailb-context>"
INSTRUCTION: Final = ("Use the following retrieved passages if they help answer; cite sources "
                      "by their [n].")
_TAG: Final = re.compile(r"<(/?\s*ailb-context)", re.IGNORECASE)
_MIN_CUT: Final = 40  # characters of a cut passage's text worth sending; less is noise
_ELLIPSIS: Final = "…"


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved chunk: its id, the document it belongs to, its text, its cosine
    similarity to the query (1 = same direction), where it came from, and the document's user
    metadata."""

    id: str
    document_id: str
    text: str
    score: float
    source: str
    section: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _defuse(text: str) -> str:
    return _TAG.sub(r"&lt;\1", text)


def _one_line(text: str) -> str:
    return " ".join(_defuse(text).split())


def _heading(number: int, passage: Passage) -> str:
    line = f"[{number}] source: {_one_line(passage.source or passage.document_id)}"
    section = _one_line(passage.section)
    return f"{line} | section: {section}" if section else line


def rag_block(passages: Sequence[Passage], max_chars: int) -> dict[str, str]:
    """A ``{"role": "system", "content": ...}`` message holding ``passages`` in the format of
    the module docstring, at most ``max_chars`` characters long (or the frame's length, if
    that is longer). Returns the message."""
    return context_block(passages, max_chars)[0]


def context_block(passages: Sequence[Passage],
                  max_chars: int) -> tuple[dict[str, str], list[Passage]]:
    """:func:`rag_block`, and the passages that made it into the block (whole or cut)."""
    head = f"{OPEN}\n{INSTRUCTION}\n"
    room = max_chars - len(head) - len(CLOSE)
    parts: list[str] = []
    used: list[Passage] = []
    for number, passage in enumerate(passages, start=1):
        heading = f"\n{_heading(number, passage)}\n"
        text = _defuse(passage.text.strip())
        if len(heading) + len(text) + 1 <= room:
            parts.append(f"{heading}{text}\n")
            used.append(passage)
            room -= len(parts[-1])
            continue
        keep = room - len(heading) - len(_ELLIPSIS) - 1
        if keep >= _MIN_CUT:
            parts.append(f"{heading}{text[:keep].rstrip()}{_ELLIPSIS}\n")
            used.append(passage)
        break
    return {"role": "system", "content": head + "".join(parts) + CLOSE}, used


def sources_header(passages: Sequence[Passage]) -> str:
    """The distinct document ids of ``passages`` in rank order, percent-encoded and joined
    with commas ("" for no passages)."""
    seen: dict[str, None] = {}
    for passage in passages:
        seen.setdefault(passage.document_id, None)
    return ",".join(quote(document_id, safe="") for document_id in seen)
