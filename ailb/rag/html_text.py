"""HTML to plain text for RAG: paragraphs for block elements, ``#`` lines for headings, the
``<title>``; scripts, styles and the like dropped. Pure; linear in the input's length."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from types import MappingProxyType
from typing import Final

from ailb.rag.chunking import tidy_paragraphs

_SKIP: Final = frozenset({"script", "style", "noscript", "template", "svg", "math", "iframe",
                          "object", "canvas", "select", "button"})
_BLOCKS: Final = frozenset({
    "address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header",
    "hgroup", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table",
    "tbody", "tfoot", "thead", "tr", "ul",
})
_CELLS: Final = frozenset({"td", "th"})
_HEADINGS: Final = MappingProxyType({f"h{n}": n for n in range(1, 7)})
# Tags that may sit in <head>; any other start tag means the head is over (<body> is optional).
_HEAD_TAGS: Final = frozenset({"title", "meta", "link", "base", "style", "script", "noscript",
                               "template"})


class _HtmlText(HTMLParser):
    """Collects the visible text of an HTML page as Markdown-ish paragraphs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.first_heading = ""
        self._skip = 0  # depth inside elements whose text is not content
        self._in_head = False
        self._in_title = False
        self._pre = 0
        self._heading: list[str] | None = None  # text of the heading being read
        self._heading_tag = "h1"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:  # inside <script>, <svg>...: only count nested skipped elements
            self._skip += tag in _SKIP
            return
        if tag == "head":
            self._in_head = True
        elif self._in_head and tag not in _HEAD_TAGS:
            self._in_head = False
        if tag in _SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in _HEADINGS:
            self.end_heading()  # <h2> inside an unclosed <h1>: the first one is over
            self._break()
            self._heading = []
            self._heading_tag = tag
        elif tag == "br" and self._heading is not None:
            self._heading.append(" ")  # a heading stays on one line
        elif tag in _BLOCKS:
            self._break()
            if tag == "pre":
                self._pre += 1
            elif tag == "li":
                self.parts.append("- ")
        elif tag in _CELLS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>: a start tag with nothing to close; a <script/> or <title/> must not open one
        if tag in _SKIP or tag == "title":
            return
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self._in_head = False
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in _HEADINGS:
            self.end_heading()
        elif tag in _BLOCKS:
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
            self._break()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif self._skip or self._in_head:
            return
        elif self._heading is not None:
            self._heading.append(data)
        elif self._pre:
            self.parts.append(data)  # <pre> keeps its lines
        else:
            self.parts.append(" ".join(data.split("\n")))

    def end_heading(self) -> None:
        """Close the heading being read, if any (at its end tag, or at the end of the page)."""
        if self._heading is None:
            return
        text = " ".join("".join(self._heading).split())
        if text:
            self.parts.append("#" * _HEADINGS[self._heading_tag] + " " + text)
            self.first_heading = self.first_heading or text
        self._heading = None
        self._break()

    def _break(self) -> None:
        self.parts.append("\n\n")


_DATA_URI: Final = re.compile(r"data:[^\"'\s<>]{256,}")
_TAG_REACH: Final = 16_384  # the most characters a tag or a comment may span


def _defuse(html: str) -> str:
    """Make ``html`` safe for :class:`html.parser.HTMLParser`. On a ``<`` whose tag never
    closes, the parser searches the rest of the page for its end, then moves on by one
    character and searches again: many unclosed tags cost quadratic time (seconds for a few
    kilobytes). A ``<`` whose ``>`` (or a ``<!--`` whose ``-->``) is not within
    :data:`_TAG_REACH` characters is escaped, so it reads as the text it is; inline data URIs
    (images, fonts) go first, as they can make a real tag that long. Returns the HTML."""
    html = _DATA_URI.sub("data:", html).replace("<![", "&lt;![")
    out: list[str] = []
    done = 0
    never = len(html) + _TAG_REACH + 1  # "not found": far enough to escape, and final
    tag_end = comment_end = -1  # the next ">" and "-->" at or after the current "<"
    at = html.find("<")
    while at >= 0:
        # each search starts past the previous find, so the whole loop is linear
        if tag_end < at:
            found = html.find(">", at)
            tag_end = found if found >= 0 else never
        reach = tag_end
        if html.startswith("<!--", at):
            if comment_end < at:
                found = html.find("-->", at + 4)
                comment_end = found if found >= 0 else never
            reach = comment_end
        if reach - at > _TAG_REACH:
            out.append(html[done:at])
            out.append("&lt;")
            done = at + 1
        at = html.find("<", at + 1)
    out.append(html[done:])
    return "".join(out)


def html_to_text(html: str) -> tuple[str, str, str]:
    """Visible text of an HTML page. Returns (text, ``<title>``, first heading)."""
    parser = _HtmlText()
    parser.feed(_defuse(html))
    parser.close()
    parser.end_heading()  # a heading left open at the end of the page
    title = " ".join("".join(parser.title_parts).split())
    return tidy_paragraphs("".join(parser.parts)), title, parser.first_heading


