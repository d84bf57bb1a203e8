"""The bounded LRU cache (fake clock) and the cache key helpers."""

from __future__ import annotations

import pytest

from ailb.caches.keys import is_deterministic, json_size, rag_cache_key, response_cache_key
from ailb.caches.lru import BoundedCache, CacheStats


class FakeClock:
    """Time that only moves when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_cache(
    *,
    max_entries: int = 10,
    max_bytes: int = 1000,
    ttl_s: float = 0.0,
    clock: FakeClock | None = None,
) -> BoundedCache[str, str]:
    return BoundedCache(
        max_entries=max_entries,
        max_bytes=max_bytes,
        ttl_s=ttl_s,
        clock=clock or FakeClock(),
        size_of=len,
    )


def tag_index(cache: BoundedCache[str, str]) -> dict[str, dict[str, None]]:
    """The private tag index: no public call shows a leftover empty tag group, so the tests
    look at it directly to check it stays in step with the entries."""
    return cache._tags


# --- LRU order and bounds -------------------------------------------------------------------


def test_get_and_put_round_trip() -> None:
    cache = make_cache()
    assert cache.get("a") is None
    cache.put("a", "xyz")
    assert cache.get("a") == "xyz"
    assert len(cache) == 1


def test_entry_bound_evicts_least_recently_used() -> None:
    cache = make_cache(max_entries=3)
    for key in "abc":
        cache.put(key, key)
    assert cache.get("a") == "a"  # a is now the most recent: b is the least recent
    cache.put("d", "d")
    assert cache.get("b") is None
    assert cache.get("a") == "a"
    assert cache.get("c") == "c"
    assert cache.get("d") == "d"
    assert len(cache) == 3
    assert cache.statistics().evictions == 1


def test_overwrite_makes_most_recent_and_replaces_size() -> None:
    cache = make_cache(max_entries=2, max_bytes=100)
    cache.put("a", "1")
    cache.put("b", "2")
    cache.put("a", "12345")  # a most recent now, b the least recent
    assert cache.statistics().bytes == 6
    cache.put("c", "3")
    assert cache.get("b") is None
    assert cache.get("a") == "12345"
    assert cache.statistics().evictions == 1


def test_byte_bound_evicts_until_it_holds() -> None:
    cache = make_cache(max_entries=100, max_bytes=10)
    cache.put("a", "aaaa")  # 4
    cache.put("b", "bbbb")  # 8
    cache.put("c", "cc")  # 10: exactly at the bound, nothing evicted
    assert cache.statistics() == CacheStats(
        entries=3, bytes=10, hits=0, misses=0, evictions=0, expirations=0
    )
    cache.put("d", "dddddddd")  # 18 -> evict a (14), b (10): both go
    stats = cache.statistics()
    assert (stats.entries, stats.bytes, stats.evictions) == (2, 10, 2)
    assert cache.get("a") is None
    assert cache.get("b") is None
    assert cache.get("c") == "cc"
    assert cache.get("d") == "dddddddd"


def test_item_of_exactly_max_bytes_is_stored_and_evicts_all_others() -> None:
    cache = make_cache(max_bytes=5)
    cache.put("a", "a")
    cache.put("b", "bbbbb")
    assert cache.get("a") is None
    assert cache.get("b") == "bbbbb"


def test_oversize_item_is_not_stored_and_evicts_nothing() -> None:
    cache = make_cache(max_bytes=5)
    cache.put("a", "aa")
    cache.put("big", "123456")
    assert cache.get("big") is None
    assert cache.get("a") == "aa"
    stats = cache.statistics()
    assert (stats.entries, stats.bytes, stats.evictions) == (1, 2, 0)


def test_oversize_overwrite_drops_the_old_value() -> None:
    cache = make_cache(max_bytes=5)
    cache.put("a", "aa", tag="t")
    cache.put("a", "123456", tag="t")
    assert cache.get("a") is None
    assert cache.statistics().bytes == 0
    assert tag_index(cache) == {}


def test_invalidate_and_clear() -> None:
    cache = make_cache()
    cache.put("a", "1")
    cache.put("b", "22")
    assert cache.invalidate("a") is True
    assert cache.invalidate("a") is False
    assert cache.get("a") is None
    assert cache.statistics().bytes == 2
    cache.get("b")
    cache.clear()
    stats = cache.statistics()
    assert (stats.entries, stats.bytes) == (0, 0)
    assert (stats.hits, stats.misses) == (1, 1)  # counters survive clear


@pytest.mark.parametrize(
    ("max_entries", "max_bytes", "ttl_s"),
    [(0, 10, 0.0), (1, 0, 0.0), (1, 10, -1.0), (1, 10, float("nan")), (1, 10, float("inf"))],
)
def test_bad_bounds_are_refused(max_entries: int, max_bytes: int, ttl_s: float) -> None:
    with pytest.raises(ValueError):
        make_cache(max_entries=max_entries, max_bytes=max_bytes, ttl_s=ttl_s)


def test_negative_size_is_refused() -> None:
    cache: BoundedCache[str, str] = BoundedCache(
        max_entries=1, max_bytes=10, ttl_s=0, clock=FakeClock(), size_of=lambda _: -1
    )
    with pytest.raises(ValueError):
        cache.put("a", "a")


# --- TTL with an injected clock -------------------------------------------------------------


def test_ttl_entry_lives_until_just_before_ttl_and_is_gone_at_ttl() -> None:
    clock = FakeClock(now=500.0)
    cache = make_cache(ttl_s=30.0, clock=clock)
    cache.put("a", "v")
    clock.advance(30.0 - 1e-6)
    assert cache.get("a") == "v"  # a hit does not extend the TTL...
    clock.advance(1e-6)  # ...so at exactly stored_at + ttl it is gone
    assert clock.now == 530.0
    assert cache.get("a") is None
    stats = cache.statistics()
    assert (stats.entries, stats.bytes, stats.hits, stats.misses, stats.expirations) == (
        0,
        0,
        1,
        1,
        1,
    )
    assert stats.evictions == 0


def test_ttl_is_counted_from_the_latest_put() -> None:
    clock = FakeClock()
    cache = make_cache(ttl_s=10.0, clock=clock)
    cache.put("a", "1")
    clock.advance(8.0)
    cache.put("a", "2")  # stored again: a fresh 10 s
    clock.advance(8.0)
    assert cache.get("a") == "2"
    clock.advance(2.0)
    assert cache.get("a") is None


def test_zero_ttl_never_expires() -> None:
    clock = FakeClock()
    cache = make_cache(ttl_s=0.0, clock=clock)
    cache.put("a", "v")
    clock.advance(1e9)
    assert cache.get("a") == "v"
    assert cache.statistics().expirations == 0


def test_expired_entries_are_dropped_before_live_ones_are_evicted() -> None:
    clock = FakeClock()
    cache = make_cache(max_entries=2, ttl_s=10.0, clock=clock)
    cache.put("old", "o")
    clock.advance(5.0)
    cache.put("live", "l")
    cache.get("old")  # old is the most recent, yet the one expired first
    clock.advance(5.0)  # old expires now; live has 5 s left
    cache.put("new", "n")
    assert cache.get("live") == "l"
    assert cache.get("new") == "n"
    stats = cache.statistics()
    assert (stats.entries, stats.evictions, stats.expirations) == (2, 0, 1)


def test_len_and_statistics_do_not_count_expired_entries() -> None:
    clock = FakeClock()
    cache = make_cache(ttl_s=1.0, clock=clock)
    cache.put("a", "aaa")
    clock.advance(0.5)
    cache.put("b", "bb")
    clock.advance(0.5)
    assert len(cache) == 1
    stats = cache.statistics()
    assert (stats.entries, stats.bytes, stats.expirations) == (1, 2, 1)


# --- tags -----------------------------------------------------------------------------------


def test_invalidate_tag_drops_only_that_tag() -> None:
    cache = make_cache()
    cache.put("r1", "x", tag="docs")
    cache.put("r2", "yy", tag="docs")
    cache.put("r3", "z", tag="faq")
    cache.put("plain", "p")
    assert cache.invalidate_tag("docs") == 2
    assert cache.invalidate_tag("docs") == 0
    assert cache.invalidate_tag("missing") == 0
    assert cache.invalidate_tag("") == 0  # untagged entries are not a group
    assert cache.get("r1") is None
    assert cache.get("r2") is None
    assert cache.get("r3") == "z"
    assert cache.get("plain") == "p"
    assert cache.statistics().bytes == 2
    assert tag_index(cache) == {"faq": {"r3": None}}


def test_tag_index_follows_eviction() -> None:
    cache = make_cache(max_entries=2)
    cache.put("a", "1", tag="t")
    cache.put("b", "2", tag="t")
    cache.put("c", "3", tag="u")  # evicts a
    assert tag_index(cache) == {"t": {"b": None}, "u": {"c": None}}
    assert cache.invalidate_tag("t") == 1
    assert len(cache) == 1


def test_tag_index_follows_expiry() -> None:
    clock = FakeClock()
    cache = make_cache(ttl_s=5.0, clock=clock)
    cache.put("a", "1", tag="t")
    clock.advance(5.0)
    assert cache.get("a") is None
    assert tag_index(cache) == {}
    assert cache.invalidate_tag("t") == 0
    cache.put("b", "2", tag="t")
    clock.advance(5.0)
    assert len(cache) == 0  # purged without a get
    assert tag_index(cache) == {}


def test_tag_index_follows_overwrite_and_invalidate() -> None:
    cache = make_cache()
    cache.put("a", "1", tag="t")
    cache.put("a", "2", tag="u")  # the new tag replaces the old one
    assert cache.invalidate_tag("t") == 0
    assert cache.get("a") == "2"
    cache.put("a", "3")  # untagged now
    assert tag_index(cache) == {}
    cache.put("b", "4", tag="v")
    cache.invalidate("b")
    assert tag_index(cache) == {}
    cache.put("c", "5", tag="w")
    cache.clear()
    assert tag_index(cache) == {}
    assert cache.invalidate_tag("w") == 0


# --- statistics -----------------------------------------------------------------------------


def test_statistics_counters() -> None:
    clock = FakeClock()
    cache = make_cache(max_entries=2, ttl_s=10.0, clock=clock)
    assert cache.statistics() == CacheStats(0, 0, 0, 0, 0, 0)
    cache.put("a", "aa")
    cache.put("b", "bbb")
    cache.get("a")  # hit
    cache.get("a")  # hit
    cache.get("x")  # miss
    cache.put("c", "c")  # evicts b (a was used)
    cache.get("b")  # miss
    clock.advance(10.0)
    cache.get("a")  # expired: miss + expiration
    assert cache.statistics() == CacheStats(
        entries=0, bytes=0, hits=2, misses=3, evictions=1, expirations=2
    )


# --- keys -----------------------------------------------------------------------------------

BODY = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Grüß dich"}],
    "temperature": 0,
}


def test_response_key_ignores_field_order() -> None:
    reordered = {"temperature": 0, "messages": BODY["messages"], "model": "gpt-4o"}
    assert response_cache_key("k1", BODY) == response_cache_key("k1", reordered)


def test_response_key_ignores_delivery_and_caller_fields() -> None:
    noisy = {
        **BODY,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "alice",
        "metadata": {"trace": "1"},
        "store": False,
        "service_tier": "flex",
    }
    assert response_cache_key("shared", noisy) == response_cache_key("shared", BODY)
    assert response_cache_key("shared", {**BODY, "stream": False}) == response_cache_key(
        "shared", BODY
    )


def test_response_key_depends_on_scope_and_answer_fields() -> None:
    key = response_cache_key("k1", BODY)
    assert len(key) == 64 and int(key, 16) >= 0
    assert response_cache_key("k2", BODY) != key
    assert response_cache_key("shared", BODY) != key
    assert response_cache_key("k1", {**BODY, "max_tokens": 5}) != key
    assert response_cache_key("k1", {**BODY, "model": "gpt-4o-mini"}) != key


def test_response_key_refuses_nan() -> None:
    with pytest.raises(ValueError):
        response_cache_key("k1", {**BODY, "temperature": float("nan")})


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.0}, True),
        ({"temperature": 0, "n": 1}, True),
        ({"temperature": 0, "n": None}, True),
        ({"seed": 42}, True),
        ({"seed": 0, "temperature": 0.7}, True),
        ({"temperature": 0, "stream": True}, True),  # streaming is the caller's call
        ({}, False),  # default temperature is 1
        ({"temperature": None}, False),
        ({"temperature": 0.2}, False),
        ({"temperature": 1}, False),
        ({"temperature": 0, "n": 2}, False),
        ({"seed": 7, "n": 2}, False),
        ({"seed": "42"}, False),
        ({"seed": 4.2}, False),
        ({"seed": True}, False),
        ({"temperature": False}, False),
        ({"temperature": "0"}, False),
        ({"temperature": 0, "n": True}, False),
    ],
)
def test_is_deterministic(extra: dict[str, object], expected: bool) -> None:
    body = {"model": "m", "messages": [], **extra}
    assert is_deterministic(body) is expected


def test_rag_key() -> None:
    key = rag_cache_key("docs", "what is ailb?", 5, 0.5, "ollama/nomic")
    assert len(key) == 64
    assert rag_cache_key("docs", "what is ailb?", 5, 0.5, "ollama/nomic") == key
    assert rag_cache_key("docs", "what is ailb?", 1, 1.0, "e") == rag_cache_key(
        "docs", "what is ailb?", 1, 1, "e"
    )
    others = {
        rag_cache_key("faq", "what is ailb?", 5, 0.5, "ollama/nomic"),
        rag_cache_key("docs", "what is AILB?", 5, 0.5, "ollama/nomic"),
        rag_cache_key("docs", "what is ailb?", 6, 0.5, "ollama/nomic"),
        rag_cache_key("docs", "what is ailb?", 5, 0.6, "ollama/nomic"),
        rag_cache_key("docs", "what is ailb?", 5, 0.5, "openai/small"),
    }
    assert key not in others and len(others) == 5
    with pytest.raises(ValueError):
        rag_cache_key("docs", "q", 5, float("nan"), "e")


def test_json_size() -> None:
    assert json_size(b"abc") == 3
    assert json_size(bytearray(b"ab")) == 2
    assert json_size("é") == 2  # UTF-8 bytes, not characters
    assert json_size({"a": [1, 2]}) == len('{"a":[1,2]}')
    assert json_size(["é"]) == len('["é"]'.encode())
    assert json_size(None) == 4
    with pytest.raises(TypeError):
        json_size(object())


def test_json_size_as_size_of() -> None:
    cache: BoundedCache[str, dict[str, str]] = BoundedCache(
        max_entries=10, max_bytes=20, ttl_s=0, clock=FakeClock(), size_of=json_size
    )
    cache.put("a", {"k": "v"})  # {"k":"v"}: 9 bytes
    assert cache.statistics().bytes == 9
