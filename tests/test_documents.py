"""Uploaded documents to plain text: kinds, encodings, refusals, HTML and Markdown clean-up."""

from __future__ import annotations

import codecs
import time

import pytest

from ailb.errors import InvalidRequest
from ailb.rag.chunking import chunk_text
from ailb.rag.documents import ExtractedDocument, extract_text

# --- kinds ----------------------------------------------------------------------------------

HTML = "<html><body><h1>Hi</h1><p>there</p></body></html>"


@pytest.mark.parametrize(("content_type", "kind"), [
    ("text/plain", "text"), ("text/markdown", "markdown"), ("text/x-markdown", "markdown"),
    ("text/html", "html"), ("application/xhtml+xml", "html"),
    ("TEXT/HTML; charset=UTF-8", "html"),
])
def test_the_content_type_decides_first(content_type: str, kind: str) -> None:
    assert extract_text(HTML, filename="notes.md", content_type=content_type).kind == kind


@pytest.mark.parametrize(("filename", "kind"), [
    ("a.txt", "text"), ("a.text", "text"), ("A.MD", "markdown"), ("dir/a.markdown", "markdown"),
    ("a.html", "html"), ("C:\\docs\\a.htm", "html"), ("a.tar.md", "markdown"),
])
def test_then_the_extension(filename: str, kind: str) -> None:
    got = extract_text(HTML, filename=filename, content_type="application/octet-stream")
    assert got.kind == kind


@pytest.mark.parametrize(("text", "kind"), [
    ("  <!DOCTYPE html><html><p>x</p></html>", "html"), ("<HTML><p>x</p></HTML>", "html"),
    ("# Just a heading\n\ntext", "text"), ("<p>a fragment</p>", "text"),
])
def test_else_the_content_is_sniffed(text: str, kind: str) -> None:
    assert extract_text(text, filename="upload").kind == kind


def test_plain_text_is_kept_as_it_is_with_unix_newlines() -> None:
    got = extract_text(b"\r\nLine one\r\n  indented  line\rlast\n\n", filename="a.txt")
    assert got == ExtractedDocument(text="Line one\n  indented  line\nlast", kind="text",
                                    title="")


# --- encodings and refusals -----------------------------------------------------------------

def test_utf8_with_and_without_a_byte_order_mark() -> None:
    text = "Crème brûlée — 5 €"
    assert extract_text(text.encode("utf-8"), filename="a.txt").text == text
    assert extract_text(codecs.BOM_UTF8 + text.encode("utf-8"), filename="a.txt").text == text
    assert extract_text("\ufeff" + text, filename="a.txt").text == text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_a_byte_order_mark(encoding: str) -> None:
    text = "Grüße aus Köln"
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    assert extract_text(bom + text.encode(encoding), filename="a.txt").text == text


def test_a_declared_charset_is_used() -> None:
    data = "Café crème".encode("latin-1")
    assert extract_text(data, content_type="text/plain; charset=ISO-8859-1").text == "Café crème"


def test_unicode_is_composed() -> None:
    assert extract_text("Cafe\u0301", filename="a.txt").text == "Café"


def refusal(data: bytes | str, **kwargs: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        extract_text(data, **kwargs)
    assert caught.value.param == "file"
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(("data", "what"), [
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "a PDF"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
    (b"PK\x03\x04\x14\x00\x06\x00", "Office document"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
])
def test_known_binary_formats_are_named(data: bytes, what: str) -> None:
    error = refusal(data, filename="report.bin")
    assert "'report.bin'" in error.message and what in error.message
    assert "Markdown" in error.message and "HTML" in error.message  # what would be accepted


def test_other_binary_data_is_refused() -> None:
    assert "binary" in refusal(b"abc\x00\x01\x02def", filename="blob.txt").message
    assert "binary" in refusal("text with a \x07 bell", filename="a.txt").message


def test_bytes_that_are_not_utf8_are_refused() -> None:
    error = refusal(b"caf\xe9 cr\xe8me", filename="old.txt")
    assert "'old.txt'" in error.message and "UTF-8" in error.message


def test_an_unknown_charset_is_refused() -> None:
    assert "charset" in refusal(b"text", content_type="text/plain; charset=klingon").message


@pytest.mark.parametrize(("data", "filename"), [
    (b"", "a.txt"), ("  \n\n ", "a.txt"),
    ("<html><head><title>T</title><script>x()</script></head><body> </body></html>", ""),
    ("<!-- only a comment -->\n\n---\n", "a.md"),
])
def test_a_document_without_text_is_refused(data: bytes | str, filename: str) -> None:
    error = refusal(data, filename=filename)
    assert "contains no text" in error.message
    assert (f"'{filename}'" if filename else "the document") in error.message


# --- HTML -----------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>  Bicycle   maintenance  </title>
  <style>body { color: red; }</style>
  <script>var tracking = "<p>not text</p>";</script>
</head>
<body>
<noscript>Please enable JavaScript.</noscript>
<template><p>template text</p></template>
<h1>Bicycle <em>maintenance</em></h1>
<p>Ten&nbsp;minutes of care &amp; a rag.<br>Each month.</p>
<h2>Brakes</h2>
<ul><li>Check the pads</li><li>Clean the rims</li></ul>
<table><tr><th>Tyre</th><th>psi</th></tr><tr><td>Road</td><td>80&ndash;100</td></tr></table>
<pre>line one
    line two</pre>
<svg><title>an icon</title><text>svg text</text></svg>
<div>Bye</div>
</body>
</html>"""


def test_html_keeps_visible_text_with_markdown_headings() -> None:
    got = extract_text(PAGE.encode("utf-8"), filename="bike.html")
    assert got.kind == "html"
    assert got.title == "Bicycle maintenance"
    assert got.text == (
        "# Bicycle maintenance\n\n"
        "Ten minutes of care & a rag.\n\nEach month.\n\n"
        "## Brakes\n\n"
        "- Check the pads\n\n- Clean the rims\n\n"
        "Tyre psi\n\nRoad 80\u2013100\n\n"
        "line one\nline two\n\n"
        "Bye")


def test_a_title_unlike_the_first_heading_heads_the_text() -> None:
    page = ("<html><head><title>Loans - Riverside Library</title></head>"
            "<body><h1>Loans</h1><p>Three weeks.</p></body></html>")
    got = extract_text(page, content_type="text/html")
    assert got.title == "Loans - Riverside Library"
    assert got.text == "# Loans - Riverside Library\n\n# Loans\n\nThree weeks."


def test_without_a_title_the_first_heading_is_the_title() -> None:
    got = extract_text("<h2>Setup</h2><p>Plug it in.</p>", content_type="text/html")
    assert got.title == "Setup" and got.text == "## Setup\n\nPlug it in."


def test_sloppy_html_is_read() -> None:
    page = ("<html><head><title>Sloppy</title><p>Body text without a body tag"
            "<p>Unclosed <b>bold <i>tags<h3>Heading<script>skip()")
    got = extract_text(page, content_type="text/html")
    assert got.text == ("# Sloppy\n\nBody text without a body tag\n\nUnclosed bold tags\n\n"
                        "### Heading")


def test_html_headings_become_sections_for_the_chunker() -> None:
    page = "<h1>Guide</h1><p>Intro.</p><h2>Install</h2><p>" + "Step. " * 100 + "</p>"
    text = extract_text(page, content_type="text/html").text
    chunks = chunk_text(text, 200, 20)
    assert chunks[0].section == "Guide" and chunks[-1].section == "Install"


# --- Markdown -------------------------------------------------------------------------------

MARKDOWN = """---
title: "Install guide"
tags: [setup]
---
Intro with *emphasis*, **strong**, __strong words__, ~~old~~ and _underlined_ text,
but snake_case_names and __init__ stay; `code *with* stars` and \\*escaped\\* too.

Setext heading
==============

## Links [and more](https://example.com) ##

See [the docs](https://example.com/docs "Docs") or [a reference][ref], ![a diagram](d.png),
<https://example.org> and <b>inline</b> <span class="x">HTML</span>.

[ref]: https://example.com/ref

| Plan | Price |
|:-----|------:|
| Basic | 10 \\| 12 |

```python
def main():  # **not bold**
    return [x](y)
```

> A quoted **tip**.

- item *one*
* item two

***
<!-- a comment
over lines -->
Sub heading
-----------
End.
"""


def test_markdown_keeps_text_and_headings_and_drops_markup() -> None:
    got = extract_text(MARKDOWN, filename="guide.md")
    assert got.kind == "markdown"
    assert got.title == "Install guide"
    assert got.text == (
        "# Install guide\n\n"
        "Intro with emphasis, strong, strong words, old and underlined text,\n"
        "but snake_case_names and __init__ stay; code *with* stars and *escaped* too.\n\n"
        "# Setext heading\n\n"
        "## Links and more\n\n"
        "See the docs or a reference, a diagram,\n"
        "https://example.org and inline HTML.\n\n"
        "Plan Price\n"
        "Basic 10 | 12\n\n"
        "def main(): # **not bold**\n"
        "return [x](y)\n\n"
        "A quoted tip.\n\n"
        "- item one\n"
        "* item two\n\n"
        "## Sub heading\n\n"
        "End.")


def test_markdown_title_is_the_first_heading_without_front_matter() -> None:
    got = extract_text("Intro.\n\n## First *real* heading\n\n# Second",
                       content_type="text/markdown")
    assert got.title == "First real heading"
    assert got.text.startswith("Intro.\n\n## First real heading")


def test_a_front_matter_title_equal_to_the_heading_is_not_repeated() -> None:
    got = extract_text("---\ntitle: Guide\n---\n# Guide\n\nText.", filename="g.md")
    assert got.title == "Guide" and got.text == "# Guide\n\nText."


def test_an_unclosed_code_fence_keeps_the_rest_as_code() -> None:
    got = extract_text("Text.\n\n```\n# not a heading\n*not emphasis*", filename="a.md")
    assert got.text == "Text.\n\n# not a heading\n*not emphasis*"
    assert got.title == ""


# --- hostile input --------------------------------------------------------------------------

HOSTILE = [
    ("html", "<a " * 40_000), ("html", '<a href="' * 20_000), ("html", "<!--" * 40_000),
    ("html", "<?" * 40_000), ("html", "<!x " * 40_000), ("html", "</" * 40_000),
    ("html", ('<a b="' * 2_000 + ">") * 10),
    ("markdown", "*a " * 40_000), ("markdown", "_a " * 40_000), ("markdown", "[a](" * 40_000),
    ("markdown", "`a " * 40_000), ("markdown", "~~a " * 40_000), ("markdown", "<!--" * 40_000),
    ("markdown", "# a" + " " * 100_000 + "b#"), ("markdown", "*a\n" * 40_000),
    ("markdown", "---\ntitle: a" + " " * 100_000 + "b\n"), ("markdown", "<http://" * 40_000),
]


@pytest.mark.parametrize(("kind", "text"), HOSTILE, ids=[f"{k}-{i}" for i, (k, _) in
                                                          enumerate(HOSTILE)])
def test_hostile_documents_take_linear_time(kind: str, text: str) -> None:
    """Each of these took minutes with a naive pattern or a bare HTMLParser (quadratic
    rescans); linear, they take milliseconds."""
    started = time.perf_counter()
    try:
        extract_text(text, content_type=f"text/{kind}")
    except InvalidRequest:
        pass  # nothing left but markup: refused, which is fine here
    assert time.perf_counter() - started < 3.0


def test_unclosed_tags_read_as_text_and_closed_ones_still_work() -> None:
    page = "<p>a < b and <b>bold</b> and <i unclosed " + "x" * 20_000
    got = extract_text(page, content_type="text/html").text
    assert got.startswith("a < b and bold and <i unclosed xxx")


def test_inline_data_uris_are_dropped() -> None:
    page = f'<p>Logo: <img src="data:image/png;base64,{"A" * 50_000}"> here.</p>'
    assert extract_text(page, content_type="text/html").text == "Logo: here."
