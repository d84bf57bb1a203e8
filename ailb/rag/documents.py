"""Turn an uploaded document into plain text for chunking. Pure.

Three kinds are understood: plain text, Markdown and HTML, in UTF-8 (with or without a byte
order mark), UTF-16 with a byte order mark, or the charset a ``Content-Type`` declares. Anything
else (PDF, Office files, images, other binary data) is refused with
:class:`~ailb.errors.InvalidRequest` rather than indexed as noise.

The output keeps what retrieval and the chunker need: paragraphs separated by blank lines, and
headings as Markdown ``#`` lines (HTML ``<h2>`` becomes ``## ...``) so that
:func:`ailb.rag.chunking.chunk_text` can record each passage's section.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from types import MappingProxyType
from typing import Final

from ailb.errors import InvalidRequest
from ailb.rag.chunking import markdown_heading

SUPPORTED: Final = "plain text (.txt), Markdown (.md) or HTML (.html), encoded as UTF-8 or UTF-16"

_CONTENT_TYPES: Final = MappingProxyType({
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/html": "html",
    "application/xhtml+xml": "html",
})
_EXTENSIONS: Final = MappingProxyType({
    "txt": "text", "text": "text",
    "md": "markdown", "markdown": "markdown",
    "html": "html", "htm": "html", "xhtml": "html",
})
# Signatures of common binary formats, to name them in the error ("a PDF") instead of failing
# on a decoding error somewhere in the middle.
_SIGNATURES: Final = (
    (b"%PDF-", "a PDF"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\xd0\xcf\x11\xe0", "an Office document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"{\\rtf", "an RTF document"),
)
# C0 control characters that never appear in text (tab, newlines, form feed are fine).
_CONTROL: Final = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


@dataclass(frozen=True, slots=True)
class ExtractedDocument:
    """The plain text of a document, its kind ("text", "markdown" or "html") and its title
    (the HTML ``<title>`` or first heading, the Markdown first heading or front-matter title;
    "" if it has none)."""

    text: str
    kind: str
    title: str


def extract_text(data: bytes | str, *, filename: str = "", content_type: str = "") -> \
        ExtractedDocument:
    """Decode ``data`` and reduce it to plain text. The kind comes from ``content_type``, else
    the extension of ``filename``, else the content (an ``<html`` or ``<!doctype html`` start
    is HTML; anything else is plain text). Returns the extracted document. Raises
    InvalidRequest (param "file") if the data is binary or in an unknown encoding, or if no
    text is left after extraction."""
    name = f"'{filename}'" if filename else "the document"
    mime, charset = _parse_content_type(content_type)
    text = data if isinstance(data, str) else _decode(data, charset, name)
    if _CONTROL.search(text):
        raise InvalidRequest(f"{name} looks like binary data, not text; upload {SUPPORTED}",
                             param="file")
    text = unicodedata.normalize("NFC", text.removeprefix("\ufeff"))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kind = _CONTENT_TYPES.get(mime) or _EXTENSIONS.get(_extension(filename)) or _sniff(text)
    if kind == "html":
        body, title, first_heading = _html_to_text(text)
    elif kind == "markdown":
        body, title, first_heading = _markdown_to_text(text)
    else:
        body, title, first_heading = text.strip("\n"), "", ""
    if not body.strip():
        raise InvalidRequest(f"{name} contains no text", param="file")
    if title and title.casefold() != first_heading.casefold():
        # A title the text does not open with becomes its first heading: a page's <title>
        # often names what its headings leave out ("Loans - Riverside Library"), and
        # questions name it too.
        body = f"# {title}\n\n{body}"
    return ExtractedDocument(text=body, kind=kind, title=title or first_heading)


def _parse_content_type(content_type: str) -> tuple[str, str]:
    """``text/html; charset=ISO-8859-1`` -> ("text/html", "iso-8859-1"). Returns both,
    lower-cased, "" where absent."""
    mime, _, params = content_type.partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return mime.strip().lower(), charset


def _extension(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def _decode(data: bytes, charset: str, name: str) -> str:
    """Bytes to text: a byte order mark wins, then a declared charset, then UTF-8. Returns the
    text. Raises InvalidRequest for a known binary format or bytes that do not decode."""
    for signature, what in _SIGNATURES:
        if data.startswith(signature):
            raise InvalidRequest(f"{name} is {what}; upload {SUPPORTED}", param="file")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"  # reads the byte order mark and drops it
    elif data.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    else:
        encoding = charset or "utf-8"
        try:
            known = codecs.lookup(encoding)
        except LookupError:
            known = None
        # codecs also knows transforms (base64, zip, rot13) that bytes.decode refuses
        if known is None or not getattr(known, "_is_text_encoding", True):
            raise InvalidRequest(f"{name} declares an unknown charset {charset!r}; upload "
                                 f"{SUPPORTED}", param="file") from None
    if b"\x00" in data and not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        # UTF-8 and the 8-bit charsets have no NUL in text: this is a binary file
        raise InvalidRequest(f"{name} looks like binary data, not text; upload {SUPPORTED}",
                             param="file")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise InvalidRequest(f"{name} is not valid {encoding.upper()} text; upload "
                             f"{SUPPORTED}", param="file") from None


def _sniff(text: str) -> str:
    head = text.lstrip()[:15].lower()
    return "html" if head.startswith(("<!doctype html", "<html")) else "text"


def _paragraphs(text: str) -> str:
    """Tidy extracted text: spaces collapsed and trimmed on each line, at most one blank line
    between paragraphs, none at either end. Returns the text."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n")


# --- HTML -----------------------------------------------------------------------------------

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


def _html_to_text(html: str) -> tuple[str, str, str]:
    """Visible text of an HTML page. Returns (text, ``<title>``, first heading)."""
    parser = _HtmlText()
    parser.feed(_defuse(html))
    parser.close()
    parser.end_heading()  # a heading left open at the end of the page
    title = " ".join("".join(parser.title_parts).split())
    return _paragraphs("".join(parser.parts)), title, parser.first_heading


# --- Markdown -------------------------------------------------------------------------------

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


def _markdown_to_text(markdown: str) -> tuple[str, str, str]:
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
    return _paragraphs("\n".join(out)), title, first_heading
