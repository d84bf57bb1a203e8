"""The built-in offline embedder: signed feature hashing of word stems, word pairs and character
trigrams. Pure (no I/O), deterministic across processes and machines.

A text becomes a bag of weighted features:

* **stems** of its content words: lower-cased, accents folded ("café" = "cafe"), English stop
  words dropped, then a small Porter-like suffix stemmer so "restart", "restarts", "restarted"
  and "restarting" meet, and so do "configure", "configured" and "configuration". A hyphenated
  word counts as its parts and, at :data:`COMPOUND_WEIGHT`, as one word ("wi-fi" = "wifi").
  Scripts written without spaces (Chinese, Japanese, Thai...) are read as character pairs;
* **word pairs** (:data:`PAIR_WEIGHT`): two neighbouring stems, in either order, so a passage
  saying "reset your password" ranks above one that says "password" and "reset" far apart;
* **character trigrams** of each stem (together :data:`GRAM_WEIGHT` of the word): they survive
  typos ("pasword") and what the stemmer misses ("replica"/"replication").

Each feature counts ``1 + log(tf)`` (a word said ten times is not ten times as relevant). The
embedder is stateless, so it cannot learn which words are rare in a corpus (no IDF); three
things stand in for it: the stop words, a list of :data:`COMMON_WORDS` (verbs such as "take",
"keep", "use" that questions are full of), and a weight that grows with the stem's length up to
seven letters (Zipf: the frequent words are the short ones), see :func:`_length_weight`.

Features are hashed with BLAKE2b (Python's ``hash()`` is salted per process) to a slot and a
sign, so that collisions cancel out on average instead of piling up. A word goes to
:data:`_WORD_SLOTS` slots at once, each with part of its weight: with 1024 dimensions and a few
hundred features per passage, a question's main word often shares its slot with some other word;
split in two, one collision costs half as much. The vector is L2-normalised, so cosine
similarity is a dot product.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from types import MappingProxyType
from typing import Final

from ailb.vectors.embedders import Vector

PAIR_WEIGHT: Final = 0.3
GRAM_WEIGHT: Final = 0.5
COMPOUND_WEIGHT: Final = 0.7
_WORD_SLOTS: Final = 2
_GRAM: Final = 3  # trigrams: short enough for a typo to leave most of them intact
_GRAM_MIN_STEM: Final = 4  # shorter stems have too few trigrams to say anything the stem does not
_MAX_COMPOUND_PARTS: Final = 4  # "wi-fi", "e-mail", "state-of-the-art"; longer chains are lists
# No word is longer; longer tokens are hashes, base64 or the like: kept, but only this much of
# them (their stemming and trigrams would cost time in proportion to their length).
_MAX_WORD: Final = 40
_CACHE_LIMIT: Final = 200_000  # memoised tokens and features, per embedder (then it restarts)

# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, CJK ideographs.
_UNSPACED: Final = (r"\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf"
                    r"\u4e00-\u9fff\uf900-\ufaff")
# A run of unspaced script, or a word: letters and digits, with inner apostrophes ("don't") and
# hyphens ("wi-fi").
_LETTERS: Final = rf"[^\W_{_UNSPACED}]+(?:['\u2019][^\W_{_UNSPACED}]+)*"
_TOKEN: Final = re.compile(rf"([{_UNSPACED}]+)|({_LETTERS}(?:-{_LETTERS})*)")

STOP_WORDS: Final = frozenset("""
a about above after again against ago all almost also although am among an and another any
anybody anyone anything anyway anywhere are around as at be became because become been before
being below between both but by can cannot could did do does doing done don down during each
either else enough etc even ever every everybody everyone everything few for from further get
gets getting got had has have having he her here hers herself him himself his how however i ie
if in into is it its itself just let lets like ll made make many may me might mine more most
much must my myself need needs neither no nobody none nor not nothing now of off often on once
one only or other others otherwise our ours ourselves out over own per please quite rather re
really s same shall she should since so some somebody someone something sometimes still such
t than thank thanks that the their theirs them themselves then there therefore these they
thing things this those though through thus to too under until up upon us ve very via want
wants was way we well were what whatever when whenever where wherever whether which while who
whoever whom whose why will with within without would yes yet you your yours yourself
yourselves
""".split())
# Very common verbs and adverbs that say little about a passage's topic (what IDF would learn
# to ignore), kept apart so the list above stays the usual one.
COMMON_WORDS: Final = frozenset("""
back come comes coming came go goes going gone went give gives giving gave given take takes
taking took taken put puts putting keep keeps keeping kept look looks looking looked see sees
seeing saw seen say says saying said tell tells telling told know knows knowing knew known
think thinks thinking thought try tries trying tried seem seems seemed use uses using used
actually already always maybe okay ok hi hello sure right
""".split())

# "-ly" words the stemmer must not cut ("family" is not "fami" + "ly").
_LY_KEEP: Final = frozenset(
    "ally anomaly apply assembly belly bully butterfly comply family fly holy homily imply "
    "italy jelly jolly july lily monopoly multiply rally rely reply supply tally ugly".split())

# Derivational endings, longest first, each with what replaces it; a rule fires only if the
# stem left over still has a vowel-consonant sequence (Porter's "measure" > 0), so "ration" and
# "mention" are not reduced to nothing.
_DERIVATIONAL: Final = (
    ("ational", "ate"), ("ization", "ize"), ("isation", "ize"), ("fulness", "ful"),
    ("ousness", "ous"), ("iveness", "ive"), ("ability", "able"), ("ibility", "ible"),
    ("ivity", "ive"), ("ator", "ate"),
    ("plication", "ply"), ("tional", "tion"), ("ation", ""), ("ition", ""), ("ement", "e"),
    ("ment", ""), ("ness", ""), ("ance", ""), ("ence", ""), ("able", ""), ("ible", ""),
    ("ical", "ic"), ("ally", "al"), ("ful", ""), ("ity", ""), ("ive", ""), ("ize", ""),
    ("ise", ""), ("ate", ""), ("ify", "ific"), ("ism", ""), ("ist", ""), ("ous", ""),
    ("ion", ""), ("al", ""), ("er", ""),
)
# Endings that need a longer stem (measure > 1): "water" keeps its "er", "total" its "al",
# "document" its "ment".
_STRICT: Final = frozenset({"er", "al", "ion", "ive", "ist", "ism", "ful", "ment"})
_VOWELS: Final = frozenset("aeiou")


def _measure(stem: str) -> int:
    """Porter's measure: how many vowel-then-consonant runs ``stem`` has ("tr"=0, "trouble"=1,
    "troubles"=2). Returns the count."""
    count = 0
    previous_vowel = False
    for i, ch in enumerate(stem):
        # "y" after a consonant sounds as a vowel ("syst-", "happy")
        vowel = ch in _VOWELS or (ch == "y" and i > 0 and stem[i - 1] not in _VOWELS)
        if previous_vowel and not vowel:
            count += 1
        previous_vowel = vowel
    return count


def _has_vowel(stem: str) -> bool:
    return any(ch in _VOWELS or ch == "y" for ch in stem[1:]) or stem[:1] in _VOWELS


# Irregular forms a suffix stemmer cannot reach, mapped to the regular form it stems.
IRREGULAR: Final = MappingProxyType({
    "children": "child", "men": "man", "women": "woman", "people": "person", "feet": "foot",
    "teeth": "tooth", "mice": "mouse", "geese": "goose", "wives": "wife",
    "knives": "knife", "halves": "half", "shelves": "shelf",
    "analyses": "analysis", "criteria": "criterion", "indices": "index", "matrices": "matrix",
    "ran": "run", "bought": "buy", "brought": "bring", "built": "build", "caught": "catch",
    "chose": "choose", "chosen": "choose", "drove": "drive", "driven": "drive", "ate": "eat",
    "eaten": "eat", "fell": "fall", "fallen": "fall", "felt": "feel", "found": "find",
    "flew": "fly", "flown": "fly", "forgot": "forget", "forgotten": "forget", "froze": "freeze",
    "frozen": "freeze", "grew": "grow", "grown": "grow", "held": "hold", "hid": "hide",
    "hidden": "hide", "left": "leave", "lent": "lend", "lost": "lose", "meant": "mean",
    "met": "meet", "paid": "pay", "rode": "ride", "ridden": "ride", "rose": "rise",
    "risen": "rise", "sent": "send", "sold": "sell", "spent": "spend", "stole": "steal",
    "stolen": "steal", "taught": "teach", "threw": "throw", "thrown": "throw", "wore": "wear",
    "worn": "wear", "won": "win", "wrote": "write", "written": "write", "broke": "break",
    "broken": "break", "began": "begin", "begun": "begin", "drank": "drink", "drunk": "drink",
    "sang": "sing", "sung": "sing", "spoke": "speak", "spoken": "speak", "woke": "wake",
    "woken": "wake", "daily": "day", "better": "good", "best": "good", "worse": "bad",
    "worst": "bad",
})


def stem(word: str) -> str:
    """Reduce an English lower-case word to a stem shared with its other forms ("policies" ->
    "policy", "configured" -> "configur"). Stems are hash keys, not words: they need only agree
    with one another. Irregular forms are looked up first (:data:`IRREGULAR`: "ran" -> "run");
    then words with digits or non-ASCII letters, and words of three letters or fewer, are
    returned as they are."""
    word = IRREGULAR.get(word, word)
    if len(word) <= 3 or not word.isascii() or not word.isalpha():
        return word
    w = word
    # 1. plurals and third person
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    # 2. past tense and gerund; "ied" like "ies", "agreed" is "agree"
    if w.endswith("ied") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("eed") and len(w) > 4:
        w = w[:-1]
    else:
        for suffix in ("ingly", "edly", "ing", "ed"):
            if w.endswith(suffix):
                base = w[: -len(suffix)]
                if len(base) >= 3 and _has_vowel(base):
                    # "updat(ed)" was "update": give the "e" back so step 4 sees "-ate"
                    w = base + "e" if base.endswith(("at", "bl", "iz")) else base
                break
    # 3. adverbs
    if w.endswith("ily") and len(w) > 5 and w not in _LY_KEEP:
        w = w[:-3] + "y"
    elif w.endswith("ly") and len(w) >= 6 and w not in _LY_KEEP:
        w = w[:-2]
    # 4. derivational endings; one that leaves an ending behind ("-ational" -> "-ate") may be
    # followed by another: "organizational" -> "organizate" -> "organiz" -> "organ"
    for _ in range(3):
        replaced = ""
        for suffix, replacement in _DERIVATIONAL:
            if w.endswith(suffix):
                base = w[: -len(suffix)]
                strict = suffix in _STRICT
                if _measure(base) > strict and len(base) + len(replacement) >= 3:
                    w = base + replacement
                    replaced = replacement
                break
        if not replaced:
            break
    # 5. spelling: "happi" -> "happy", a final "e" goes ("configure" = "configur"), and a doubled
    # final letter is single ("stopp", "cancell", "install" all lose one) so that every form
    # of a word agrees, whichever of them kept the silent letters.
    if w.endswith("i") and len(w) > 3:
        w = w[:-1] + "y"
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in _VOWELS:
        w = w[:-1]
    return w


def _fold(word: str) -> str:
    """Fold accents of Latin-script words ("café" -> "cafe"), so an English keyboard finds them;
    other scripts keep their marks, which there are letters, not accents."""
    if word.isascii():
        return word
    decomposed = unicodedata.normalize("NFKD", word)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped if stripped.isascii() else unicodedata.normalize("NFC", word)


def _before_apostrophe(token: str) -> str:
    """"don't", "it's", "user's": the part before the apostrophe carries the meaning."""
    return token.split("'", 1)[0].split("\u2019", 1)[0]


def _length_weight(stem: str) -> float:
    """How much a stem's presence says, from its length alone: 0.6 for three letters, rising
    by 0.1 a letter to 1.0 from seven. Returns the weight."""
    return min(1.0, 0.3 + 0.1 * len(stem))


def _hash(key: str) -> int:
    """A stable 128-bit hash of a feature name. Returns it as an int."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest(), "little")


class LexicalEmbedder:
    """Feature-hashing embedder (see the module docstring). Satisfies
    :class:`~ailb.vectors.embedders.SyncEmbedder`; cheap enough to run on the event loop in
    small batches (:class:`~ailb.vectors.embedders.InlineEmbedder`): about half a millisecond
    for a text of 1000 characters.

    A text made only of stop words ("what is it?") is embedded from those words. A text with no
    words at all (empty, punctuation only) gets one fixed unit vector (every component
    ``1/sqrt(dimensions)``), never a zero vector: the cosine distance to a zero vector is
    undefined (NaN in ChromaDB). Its similarity to real texts is near zero.
    """

    def __init__(self, dimensions: int = 1024) -> None:
        """Raises ValueError if ``dimensions`` < 1."""
        if dimensions < 1:
            raise ValueError(f"dimensions must be at least 1, not {dimensions}")
        self._dimensions = dimensions
        # Memo of the work that depends only on a token or a stem (folding, stemming, hashing):
        # texts repeat words, so most of a batch is look-ups. Per instance, never shared.
        self._tokens: dict[str, tuple[tuple[str, ...], str | None]] = {}
        self._features: dict[str, tuple[tuple[int, float], ...]] = {}
        self._pairs: dict[tuple[str, str], tuple[int, float]] = {}

    @property
    def id(self) -> str:
        """``lexical-v1/<dimensions>``: the version changes whenever vectors would change."""
        return f"lexical-v1/{self._dimensions}"

    def vectors(self, texts: Sequence[str]) -> list[Vector]:
        """One L2-normalised vector of ``dimensions`` floats per text, in order. Raises
        nothing."""
        if len(self._tokens) + len(self._features) + len(self._pairs) > _CACHE_LIMIT:
            self._tokens.clear()
            self._features.clear()
            self._pairs.clear()
        return [self._vector(text) for text in texts]

    def stems(self, text: str) -> tuple[list[str], list[str]]:
        """The stems of ``text``'s content words in order, and the joined stems of its
        hyphenated words; its stop words instead if it has no content words. Returns both."""
        stems: list[str] = []
        compounds: list[str] = []
        memo = self._tokens
        matches = _TOKEN.findall(text.casefold())
        for unspaced, word in matches:
            token = unspaced or word
            found = memo.get(token)
            if found is None:
                found = _analyse(token, bool(unspaced))
                if len(token) <= _MAX_WORD:  # a long run of CJK, a hash: rare, and large
                    memo[token] = found
            stems.extend(found[0])
            if found[1] is not None:
                compounds.append(found[1])
        if not stems and matches:
            # only stop words: better to match on them than on nothing
            stems = [stem(_fold(_before_apostrophe(part)))
                     for _, word in matches if word for part in word.split("-") if part]
        return stems, compounds

    def _word(self, s: str) -> tuple[tuple[int, float], ...]:
        """A stem's slots with signed weights: the word itself and its trigrams."""
        found = self._features.get(s)
        if found is not None:
            return found
        weight = _length_weight(s)
        h = _hash("w:" + s)
        out: list[tuple[int, float]] = []
        share = weight / math.sqrt(_WORD_SLOTS)  # the slots together weigh `weight`
        for i in range(_WORD_SLOTS):
            piece = (h >> (32 * i)) & 0xFFFFFFFF
            out.append((piece % self._dimensions, share if piece >> 31 else -share))
        if len(s) >= _GRAM_MIN_STEM:
            padded = f"<{s}>"
            grams = [padded[i:i + _GRAM] for i in range(len(padded) - _GRAM + 1)]
            share = GRAM_WEIGHT * weight / math.sqrt(len(grams))
            for gram in grams:
                out.append(self._one("c:" + gram, share))
        found = self._features[s] = tuple(out)
        return found

    def _one(self, key: str, weight: float) -> tuple[int, float]:
        """One slot for a feature of the given weight, with its sign."""
        h = _hash(key)
        return h % self._dimensions, (weight if h >> 127 else -weight)

    def _vector(self, text: str) -> Vector:
        stems, compounds = self.stems(text)
        dimensions = self._dimensions
        if not stems:
            return [1.0 / math.sqrt(dimensions)] * dimensions
        vector = [0.0] * dimensions
        for s, tf in Counter(stems).items():
            scale = 1.0 + math.log(tf)
            for index, weight in self._word(s):
                vector[index] += weight * scale
        for s, tf in Counter(compounds).items():
            scale = COMPOUND_WEIGHT * (1.0 + math.log(tf))
            # the compound's own slots (not its trigrams: its parts already gave those)
            for index, weight in self._word(s)[:_WORD_SLOTS]:
                vector[index] += weight * scale
        # order-free: "password reset" and "reset the password" are one pair
        pairs = Counter((a, b) if a <= b else (b, a)
                        for a, b in itertools.pairwise(stems) if a != b)
        memo = self._pairs
        for pair, tf in pairs.items():
            found = memo.get(pair)
            if found is None:
                found = memo[pair] = self._one(f"p:{pair[0]} {pair[1]}", PAIR_WEIGHT)
            vector[found[0]] += found[1] * (1.0 + math.log(tf))
        norm = math.sqrt(sum(v * v for v in vector))
        if norm < 1e-12:  # every feature cancelled out: possible, if improbable
            return [1.0 / math.sqrt(dimensions)] * dimensions
        return [v / norm for v in vector]


def _analyse(token: str, unspaced: bool) -> tuple[tuple[str, ...], str | None]:
    """A token's stems (none for a stop word; the parts of a hyphenated word; the character
    pairs of an unspaced run) and, for a hyphenated word, the stem of its parts joined. Returns
    (stems, compound or None)."""
    if unspaced:
        if len(token) == 1:
            return (token,), None
        return tuple(token[i:i + 2] for i in range(len(token) - 1)), None
    parts = [_fold(_before_apostrophe(part))[:_MAX_WORD] for part in token.split("-")]
    stems = tuple(stem(part) for part in parts if part and not _is_stop_word(part))
    compound = None
    if 1 < len(parts) <= _MAX_COMPOUND_PARTS:
        joined = "".join(parts)
        if joined and not _is_stop_word(joined):
            compound = stem(joined)
    return stems, compound


def _is_stop_word(word: str) -> bool:
    return word in STOP_WORDS or word in COMMON_WORDS
