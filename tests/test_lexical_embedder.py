"""The built-in lexical embedder: shape, determinism, and the text analysis retrieval relies on."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

import ailb.vectors.lexical as lexical
from ailb.vectors.embedders import MAX_TEXT_CHARS, InlineEmbedder, SyncEmbedder, ThreadedEmbedder
from ailb.vectors.lexical import LexicalEmbedder, stem


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def similarity(first: str, second: str, dimensions: int = 4096) -> float:
    a, b = LexicalEmbedder(dimensions).vectors([first, second])
    return cosine(a, b)


def test_id_names_the_vector_space() -> None:
    assert LexicalEmbedder().id == "lexical-v1/1024"
    assert LexicalEmbedder(256).id == "lexical-v1/256"


def test_dimensions_must_be_positive() -> None:
    with pytest.raises(ValueError, match="dimensions"):
        LexicalEmbedder(0)


def test_one_unit_vector_per_text_in_order() -> None:
    embedder = LexicalEmbedder(128)
    texts = ["The server restarts at night.", "Bake the bread at 250 °C.", "x"]
    vectors = embedder.vectors(texts)
    assert len(vectors) == 3
    for vector in vectors:
        assert len(vector) == 128
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)
    assert embedder.vectors(texts[1:2]) == vectors[1:2]
    assert embedder.vectors([]) == []


def test_the_vector_space_is_pinned() -> None:
    """These numbers are the vector space: if they change, stored collections no longer match
    new queries, and the id must change with them (lexical-v2)."""
    vector = LexicalEmbedder(64).vectors(["Restarting the servers"])[0]
    expected = {5: 0.123264, 9: 0.119826, 13: -0.415089, 14: 0.123264, 15: 0.415089,
                16: -0.123264, 19: 0.123264, 20: -0.46121, 24: -0.195675, 25: 0.119826,
                32: 0.003438, 33: 0.119826, 41: 0.239652, 44: 0.46121, 52: -0.123264,
                59: -0.123264}
    assert {i for i, v in enumerate(vector) if v} == set(expected)
    for index, value in expected.items():
        assert vector[index] == pytest.approx(value, abs=1e-6)


def test_same_vectors_in_another_process_whatever_its_hash_seed() -> None:
    """Python's str hash is salted per process; the embedder must not depend on it."""
    text = "Promote the standby database when the primary fails."
    here = LexicalEmbedder(256).vectors([text])[0]
    code = ("import json; from ailb.vectors.lexical import LexicalEmbedder; "
            f"print(json.dumps(LexicalEmbedder(256).vectors([{text!r}])[0]))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(out.stdout) == here  # JSON floats round-trip exactly


def test_memo_reset_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    text = ["Wi-Fi drops every few hours; restart the router", "café au lait"]
    expected = LexicalEmbedder(512).vectors(text)
    monkeypatch.setattr(lexical, "_CACHE_LIMIT", 1)
    embedder = LexicalEmbedder(512)
    assert embedder.vectors(text) == expected
    assert embedder.vectors(text) == expected  # second call: the memo was cleared first


@pytest.mark.parametrize("text", ["", "   ", "?!", "--- ... ***", "\n\t"])
def test_a_text_without_words_gets_a_fixed_unit_vector_not_zeros(text: str) -> None:
    vector = LexicalEmbedder(100).vectors([text])[0]
    assert all(math.isclose(v, 0.1) for v in vector)  # 1/sqrt(100): unit length, no NaN


def test_a_text_of_only_stop_words_is_embedded_from_them() -> None:
    embedder = LexicalEmbedder(256)
    what, empty, to_be = embedder.vectors(["What is it?", "", "to be or not to be"])
    assert what != empty
    assert cosine(what, to_be) < 0.5


def test_stop_words_case_and_accents_do_not_matter() -> None:
    embedder = LexicalEmbedder(256)
    a, b, c = embedder.vectors(["the CAFÉ menu", "Cafe menu", "a café's MENU"])
    assert a == b
    assert cosine(a, c) == pytest.approx(1.0)


@pytest.mark.parametrize("family", [
    "restart restarts restarted restarting",
    "configure configured configuring configuration configurations",
    "install installed installing installation",
    "cancel cancelled canceled cancelling cancellation",
    "policy policies",
    "apply applied applying application",
    "manage managed managing management manager",
    "notify notified notification",
    "update updated updates updating",
    "agree agreed agreement",
    "delete deleted deleting deletion",
    "happy happiness",
    "easy easily",
    "stop stopped stopping",
    "pay paid",
    "run running runs ran",
])
def test_the_stemmer_joins_the_forms_of_a_word(family: str) -> None:
    words = family.split()
    assert {stem(w) for w in words} == {stem(words[0])}, {w: stem(w) for w in words}


@pytest.mark.parametrize("word", ["water", "total", "document", "family", "supply", "user"])
def test_the_stemmer_does_not_cut_endings_that_are_the_word(word: str) -> None:
    assert stem(word) == word


def test_a_word_repeated_does_not_drown_the_others() -> None:
    flooded = "server " * 50 + "restart"
    # counted linearly, "server" would leave "restart" 1/50 of the vector
    assert similarity(flooded, "restart") > 0.15


def test_related_texts_are_closer_than_unrelated_ones() -> None:
    question = "How do I restart the servers?"
    related = "Restarting a server: drain it first, then restart the service."
    unrelated = "Knead the dough for ten minutes and let it rise overnight."
    assert similarity(question, related) > 0.3
    assert abs(similarity(question, unrelated)) < 0.1


def test_word_pairs_favour_the_phrase() -> None:
    # the same words; only their neighbours differ
    question = "reset the password"
    phrase = "the password reset of the router"
    apart = "reset the router password"
    assert similarity(question, phrase) > similarity(question, apart) + 0.02


def test_hyphenated_words_meet_their_joined_form() -> None:
    assert similarity("wifi", "The Wi-Fi keeps dropping") > 0.3
    assert similarity("send an email", "send an e-mail") > 0.5


def test_typos_still_find_the_word() -> None:
    typo = similarity("pasword reset", "How to reset a forgotten password")
    other = similarity("pasword reset", "Reset the thermostat to factory settings")
    assert typo > other


def test_unspaced_scripts_match_on_character_pairs() -> None:
    assert similarity("東京駅", "東京駅に行く電車") > 0.3
    assert abs(similarity("東京駅", "大阪城")) < 0.1


def test_vectors_are_in_the_configured_dimension_range() -> None:
    for dimensions in (1, 7, 64, 8192):
        vector = LexicalEmbedder(dimensions).vectors(["one two three"])[0]
        assert len(vector) == dimensions
        assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-9)


async def test_it_serves_as_a_sync_embedder_inline_and_threaded() -> None:
    inner: SyncEmbedder = LexicalEmbedder(64)
    texts = [f"text number {i}" for i in range(70)]
    expected = inner.vectors(texts)
    assert await InlineEmbedder(inner).embed(texts) == expected  # on the loop
    many = [f"a longer text about topic {i} " * 20 for i in range(40)]  # in a thread
    assert await InlineEmbedder(inner).embed(many) == inner.vectors(many)
    huge = "word " * 20_000  # only the head of a huge text counts
    assert await InlineEmbedder(inner).embed([huge]) == inner.vectors([huge[:MAX_TEXT_CHARS]])
    threaded = ThreadedEmbedder(inner)
    assert threaded.id == "lexical-v1/64"
    assert await threaded.embed(texts) == expected
