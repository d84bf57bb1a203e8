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
from types import MappingProxyType
from typing import Final

from ailb.errors import InvalidRequest
from ailb.rag.html_text import html_to_text
from ailb.rag.markdown_text import markdown_to_text

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
UPLOAD_EXTENSIONS: Final = frozenset(_EXTENSIONS)  # file names whose kind is known
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
        body, title, first_heading = html_to_text(text)
    elif kind == "markdown":
        body, title, first_heading = markdown_to_text(text)
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
