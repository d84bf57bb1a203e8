"""Markdown to plain text for RAG: headings kept as ``#`` lines, emphasis, links, images,
code fences and table pipes reduced to their text. Pure; linear in the input's length."""

from __future__ import annotations

import re
from typing import Final

from ailb.rag.chunking import markdown_heading, tidy_paragraphs

_FENCE: Final = re.compile(r" {0,3}(`{3,}|~{3,})")
_SETEXT: Final = re.compile(r" {0,3}(=+|-{2,})[ \t]*")
_LIST_ITEM: Final = re.compile(r"\s*(?:[-*+]|\d{1,9}[.)])\s")
_RULE: Final = re.compile(r" {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})")
_TABLE_CELL_DIVIDER: Final = re.compile(r":?-+:?")
_REFERENCE_DEFINITION: Final = re.compile(r" {0,3}\[[^\]]+\]:\s+\S+.*")
_FRONT_MATTER: Final = re.compile(r"---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|$)", re.DOTALL)
# Inline patterns are written to run in linear time on hostile input: every repeat stops at
# its closing delimiter (a span cannot contain it) and is bounded and possessive, so no
# opening "*" or "[" can make the engine rescan the rest of a long line.
_CODE_SPAN: Final = re.compile(r"(?<!`)(`{1,3})(?!`)([^`\n]{1,1000}+)\1(?!`)")
_ESCAPE: Final = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~<])")
_STASHED: Final = re.compile("\ue000(\\d+)\ue001")  # private-use marks around a stash index
_INLINE: Final = (
    # image, link: their text (alt text, link text), not their address
    (re.compile(r"!?\[([^\[\]\n]{0,500}+)\]\([^()\n]{0,2048}+\)"), r"\1"),
    (re.compile(r"!?\[([^\[\]\n]{1,500}+)\]\[[^\[\]\n]{0,500}+\]"), r"\1"),  # by reference
    (re.compile(r"<((?:https?|mailto|ftp):[^<>\s]{1,2048}+)>"), r"\1"),  # autolink: the address
    (re.compile(r"</?[A-Za-z][A-Za-z0-9-]{0,30}+(?:\s[^<>\n]{0,1000}+)?>"), ""),  # HTML tag
    (re.compile(r"\*\*(?=\S)([^*\n]{1,500}+)(?<=\S)\*\*"), r"\1"),  # strong
    # __strong text__ needs a space inside: __init__ is a name, not emphasis
    (re.compile(r"(?<!\w)__(?=[^_\n]*\s)(?=\S)([^_\n]{1,500}+)(?<=\S)__(?!\w)"), r"\1"),
    (re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]{1,500}+)(?<=[^\s*])\*(?![\w*])"), r"\1"),
    # _emphasis_, but not snake_case_names
    (re.compile(r"(?<![\w_])_(?=[^\s_])([^_\n]{1,500}+)(?<=[^\s_])_(?![\w_])"), r"\1"),
    (re.compile(r"~~(?=\S)([^~\n]{1,500}+)(?<=\S)~~"), r"\1"),  # strike-through
)


def _without_comments(text: str) -> str:
    """``text`` without its HTML comments (an unclosed one runs to the end). By hand: a lazy
    pattern would rescan the rest of the text from every unclosed ``<!--``."""
    out: list[str] = []
    done = 0
    while (start := text.find("<!--", done)) >= 0:
        out.append(text[done:start])
        end = text.find("-->", start + 4)
        done = len(text) if end < 0 else end + 3
    out.append(text[done:])
    return "".join(out)


def _is_table_divider(line: str) -> bool:
    """``|:---|---:|``, the line under a table's header row."""
    if "|" not in line:
        return False
    cells = line.strip().strip("|").split("|")
    return all(_TABLE_CELL_DIVIDER.fullmatch(cell.strip()) for cell in cells)


def _inline(text: str) -> str:
    """Markdown inline markup reduced to its text, line by line (no span crosses a line, so
    many lines can go in one call). Returns the text, with as many lines."""
    # Code spans and escaped characters are literal: set them aside so that no later rule
    # reads "__init__" in `__init__` as emphasis or "\*" as a marker, then put them back.
    stash: list[str] = []

    def keep(value: str) -> str:
        stash.append(value)
        return f"\ue000{len(stash) - 1}\ue001"

    text = _CODE_SPAN.sub(lambda m: keep(m.group(2).strip()), text)
    text = _ESCAPE.sub(lambda m: keep(m.group(1)), text)
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    if "|" in text:
        # a table row: cells separated by spaces (a stashed "\|" is text, not a border)
        text = "\n".join(" ".join(cell.strip() for cell in line.split("|")).strip()
                         if "|" in line else line for line in text.split("\n"))
    return _STASHED.sub(lambda m: stash[int(m.group(1))], text)


def markdown_to_text(markdown: str) -> tuple[str, str, str]:
    """Markdown without its markup: headings kept as ``#`` lines, code kept without its
    fences (and without its indentation), links and images reduced to their text. Returns
    (text, front-matter ``title`` or "", first heading or "")."""
    title = first_heading = ""
    front = _FRONT_MATTER.match(markdown)
    if front:
        markdown = markdown[front.end():]
        found = re.search(r"(?m)^title:(.*)$", front.group(1))
        title = found.group(1).strip().strip("\"'").strip() if found else ""
    markdown = _without_comments(markdown)
    out: list[str] = []
    prose: list[int] = []  # lines of `out` whose inline markup is still to go (in one call)
    fence = ""  # the marker of the open code block, "" outside one
    for line in markdown.split("\n"):
        opener = _FENCE.match(line)
        if fence:
            if opener and opener.group(1).startswith(fence) and not line.strip(" `~"):
                fence = ""
                out.append("")  # the block ends a paragraph
            else:
                out.append(line)  # code is content: kept as it is
            continue
        if opener:
            fence = opener.group(1)
            out.append("")
            continue
        heading = markdown_heading(line)
        if heading:
            text = _inline(heading[1]).strip()
            if text:
                out.extend(["", f"{'#' * heading[0]} {text}", ""])
                first_heading = first_heading or text
            continue
        setext = _SETEXT.fullmatch(line)
        if setext and out and out[-1].strip() and not out[-1].startswith("#") and (
                not _LIST_ITEM.match(out[-1])):
            # "Title\n=====" is a level-1 heading, "---" under text a level-2 one
            text = _inline(out.pop()).strip()
            if prose and prose[-1] == len(out):
                prose.pop()
            level = "#" if setext.group(1)[0] == "=" else "##"
            out.extend(["", f"{level} {text}", ""])
            first_heading = first_heading or text
            continue
        if _RULE.fullmatch(line) or _REFERENCE_DEFINITION.fullmatch(line):
            out.append("")
            continue
        if _is_table_divider(line):
            continue
        stripped = line.lstrip()
        while stripped.startswith(">"):  # block quotes: the quoted text
            stripped = stripped[1:].lstrip()
        prose.append(len(out))
        out.append(stripped)
    # one call for all the prose: per line, the calls would cost more than the work
    if prose:
        converted = _inline("\n".join(out[i] for i in prose)).split("\n")
        for index, text in zip(prose, converted, strict=True):
            out[index] = text
    return tidy_paragraphs("\n".join(out)), title, first_heading
