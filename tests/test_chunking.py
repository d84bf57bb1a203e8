"""Chunking: sizes, overlaps, offsets into the original text, sections, and where cuts fall."""

from __future__ import annotations

import itertools
import random
import re
import time

import pytest

from ailb.rag.chunking import Chunk, _ends_sentence, chunk_text, markdown_heading


def words_of(chunk: Chunk) -> list[str]:
    return chunk.text.split()


def original_words(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group()) for m in re.finditer(r"\S+", text)]


def sentences(n: int, words: int = 12, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocabulary = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo".split()
    return " ".join(" ".join(rng.choice(vocabulary) for _ in range(words)).capitalize() + "."
                    for _ in range(n))


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (-5, 0), (10, 10), (10, 11), (10, -1)])
def test_bad_sizes_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk"):
        chunk_text("some text", size, overlap)


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\r\n"])
def test_blank_text_has_no_chunks(text: str) -> None:
    assert chunk_text(text, 100, 10) == []


def test_a_short_text_is_one_chunk_with_normalised_whitespace() -> None:
    text = "\n\n  Hello,\t  world.   How  are\r\nyou?  \n\nSecond   paragraph.\n"
    [chunk] = chunk_text(text, 1000, 100)
    assert chunk == Chunk(text="Hello, world. How are you?\n\nSecond paragraph.", start=4,
                          index=0, section="")


def test_chunk_is_frozen() -> None:
    chunk = chunk_text("one", 10, 0)[0]
    with pytest.raises(AttributeError):
        chunk.text = "two"  # type: ignore[misc]


def test_chunks_are_bounded_indexed_and_point_into_the_original() -> None:
    text = "\r\n\r\n".join(sentences(6, seed=s) for s in range(8))
    chunks = chunk_text(text, 300, 60)
    assert len(chunks) > 5
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert 0 < len(chunk.text) <= 300
        first = words_of(chunk)[0]
        assert text[chunk.start:chunk.start + len(first)] == first
    assert [c.start for c in chunks] == sorted({c.start for c in chunks})


def test_without_overlap_every_word_is_in_exactly_one_chunk() -> None:
    text = "# Title\n\n" + "\n\n".join(sentences(4, seed=s) for s in range(10))
    chunks = chunk_text(text, 250, 0)
    assert [w for c in chunks for w in words_of(c)] == [w for _, w in original_words(text)]


def test_consecutive_chunks_share_about_the_overlap_at_word_boundaries() -> None:
    text = sentences(60, words=9, seed=3)
    chunks = chunk_text(text, 400, 80)
    words = original_words(text)
    starts = {offset: i for i, (offset, _) in enumerate(words)}
    for before, after in itertools.pairwise(chunks):
        # each chunk is a run of the original words, beginning at its start offset
        first = starts[after.start]
        run = [w for _, w in words[first:first + len(words_of(after))]]
        assert run == words_of(after)
        # and it begins with the end of the previous one
        shared = before.text[before.text.index(words_of(after)[0], len(before.text) - 80):]
        assert after.text.startswith(shared)
        assert 40 <= len(shared) <= 80


def test_the_overlap_starts_at_a_sentence_when_one_is_near_enough() -> None:
    text = sentences(40, words=5, seed=4)  # short sentences: one always ends in the window
    for before, after in itertools.pairwise(chunk_text(text, 300, 100)):
        assert after.text[0].isupper(), after.text[:30]
        assert before.text.endswith(".")


def test_paragraphs_are_not_split_when_they_fit() -> None:
    paragraphs = [sentences(3, seed=s) for s in range(9)]  # about 250 characters each
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, 1000, 150)
    for chunk in chunks:
        # every chunk ends where a paragraph ends
        assert any(chunk.text.endswith(p) for p in paragraphs)


def test_a_long_paragraph_is_cut_between_sentences() -> None:
    text = sentences(30, seed=5)
    for chunk in chunk_text(text, 500, 0):
        assert chunk.text.endswith(".") and chunk.text[0].isupper()


def test_a_word_longer_than_a_chunk_is_cut_hard() -> None:
    text = "short " + "x" * 2500 + " tail"
    chunks = chunk_text(text, 1000, 100)
    assert [c.text for c in chunks] == ["short", "x" * 1000, "x" * 1000, "x" * 500 + " tail"]
    assert [c.start for c in chunks] == [0, 6, 1006, 2006]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_tiny_sizes_still_terminate_and_cover_everything(size: int) -> None:
    text = "ab cde f\n\nghij"
    chunks = chunk_text(text, size, size - 1)
    assert all(0 < len(c.text) <= size for c in chunks)
    assert "".join(c.text for c in chunk_text(text, size, 0)).replace(" ", "") == "abcdefghij"


def test_sections_come_from_the_nearest_heading_before_the_chunk() -> None:
    text = ("# Guide\n\nIntro text, long enough to stand alone as a chunk.\n\n## Install\n\n"
            + sentences(12, seed=6)
            + "\n\n## Use ##\n\nShort.\n\n```bash\n# a comment, not a heading\n```\n")
    chunks = chunk_text(text, 300, 50)
    assert chunks[0].section == "Guide"
    assert chunks[0].text == "# Guide\n\nIntro text, long enough to stand alone as a chunk."
    install = [c for c in chunks if c.section == "Install"]
    assert install and install[0].text.startswith("## Install")
    assert len(install) > 1  # the long section spans chunks, all of them in "Install"
    assert chunks[-1].section == "Use"
    assert chunks[-1].text.startswith("## Use ##")
    assert "# a comment, not a heading" in chunks[-1].text


def test_a_tiny_section_is_not_a_chunk_of_its_own() -> None:
    text = "# Guide\n\nIntro.\n\n## Install\n\n" + sentences(12, seed=6)
    chunks = chunk_text(text, 300, 50)
    assert chunks[0].text.startswith("# Guide\n\nIntro.\n\n## Install\n\n")
    assert chunks[0].section == "Guide"


def test_a_new_section_starts_a_chunk_without_overlap() -> None:
    text = "## One\n\n" + sentences(10, seed=7) + "\n\n## Two\n\n" + sentences(5, seed=8)
    assert len(text) > 1000
    chunks = chunk_text(text, 1000, 200)
    assert [c.section for c in chunks] == ["One", "Two"]
    assert chunks[1].text.startswith("## Two")
    assert chunks[1].start == text.index("## Two")


def test_lists_tables_and_code_keep_their_lines() -> None:
    text = "Steps:\n- one\n- two\n\n| a | b |\n|---|---|\n\n```\nx  =  1\ny = 2\n```"
    [chunk] = chunk_text(text, 1000, 0)
    assert chunk.text == "Steps:\n- one\n- two\n\n| a | b |\n|---|---|\n\n```\nx = 1\ny = 2\n```"


def test_wrapped_prose_lines_are_joined() -> None:
    [chunk] = chunk_text("one line\nwrapped here\nand here", 100, 0)
    assert chunk.text == "one line wrapped here and here"


@pytest.mark.parametrize(("word", "following", "ends"), [
    ("done.", "Next", True), ("done!", "next", True), ("really?", "Yes", True),
    ('said."', "Then", True), ("(see above.)", "Then", True), ("e.g.", "The", False),
    ("Dr.", "Smith", False), ("J.", "Smith", False), ("U.S.", "The", False),
    ("1.", "Step", False), ("fig.", "3", False), ("file.", "then", False),
    ("done", "Next", False), ("v1.2", "Next", False), ("終わり。", "次", True),
])
def test_sentence_ends(word: str, following: str, ends: bool) -> None:
    assert _ends_sentence(word, following) is ends


def test_random_texts_keep_the_invariants() -> None:
    rng = random.Random(42)
    pieces = ["word", "Sentence ends.", "e.g.", "\n\n", "\n", "\n## Heading\n", "- item\n",
              "```\ncode\n```\n", "\r\n", "\t", "x" * 40, "longer-word-with-hyphens"]
    for _ in range(300):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        size = rng.choice([1, 5, 30, 80, 200])
        overlap = rng.randint(0, size - 1)
        chunks = chunk_text(text, size, overlap)
        assert bool(chunks) == bool(text.strip())
        previous = -1
        for i, chunk in enumerate(chunks):
            assert chunk.index == i and 0 < len(chunk.text) <= size
            assert chunk.text == chunk.text.strip() and "  " not in chunk.text
            assert chunk.start > previous
            previous = chunk.start
            first = words_of(chunk)[0]
            assert text[chunk.start:chunk.start + len(first)] == first
        if overlap == 0:
            assert "".join("".join(words_of(c)) for c in chunks) == "".join(text.split())


@pytest.mark.parametrize("text", ["# a" + " " * 200_000 + "b #", "*a\n" * 50_000, ". " * 100_000,
                                  "x" * 300_000, "word " * 100_000],
                         ids=["spaced-heading", "short-lines", "stops", "one-word", "words"])
def test_hostile_texts_are_chunked_in_linear_time(text: str) -> None:
    started = time.perf_counter()
    chunks = chunk_text(text, 1000, 150)
    assert chunks and time.perf_counter() - started < 3.0


def test_markdown_heading() -> None:
    assert markdown_heading("## Install ##") == (2, "Install")
    assert markdown_heading("   # Title #not closing") == (1, "Title #not closing")
    assert markdown_heading("###### Six") == (6, "Six")
    assert markdown_heading("#") == (1, "")
    assert markdown_heading("## ##") == (2, "")
    assert markdown_heading("####### seven") is None
    assert markdown_heading("#hashtag") is None
    assert markdown_heading("    # indented code") is None
    assert markdown_heading("# spaced" + " " * 50 + "#\r\n") == (1, "spaced")
