"""An LRU cache bounded by entry count and by total bytes, with an optional TTL. Pure: time comes
from the injected ``clock``, sizes from the injected ``size_of``.

Not thread-safe, by design: the gateway runs one Trio loop, and no method awaits, so a method
runs to completion before another task can touch the cache. Do not share one instance between
threads.

Expiry is counted from when a value was stored (``put``), not from its last hit: a cached
answer goes stale by age, however often it is read. An entry is gone once ``ttl_s`` seconds
have passed (``now - stored_at >= ttl_s``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of a cache: current ``entries`` and ``bytes``; lifetime counters of ``hits``,
    ``misses`` (expired entries included), ``evictions`` (dropped to respect a bound) and
    ``expirations`` (dropped because their TTL passed)."""

    entries: int
    bytes: int
    hits: int
    misses: int
    evictions: int
    expirations: int


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    size: int
    tag: str
    stored_at: float


class BoundedCache(Generic[K, V]):
    """At most ``max_entries`` entries and ``max_bytes`` bytes (as measured by ``size_of``);
    entries expire ``ttl_s`` seconds after they were stored (``ttl_s == 0``: never).

    Entries may carry a tag (e.g. a RAG collection name) so that ``invalidate_tag`` can drop
    them all at once, in time proportional to the number of entries with that tag.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float],
        size_of: Callable[[V], int],
    ) -> None:
        """Raises ``ValueError`` if ``max_entries`` or ``max_bytes`` is below 1, or ``ttl_s`` is
        negative or not finite."""
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if not math.isfinite(ttl_s) or ttl_s < 0:
            raise ValueError(f"ttl_s must be a finite number >= 0, got {ttl_s}")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._size_of = size_of
        # Least recently used first: eviction pops from the front, a hit moves to the end.
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        # Oldest stored first. The TTL is the same for every entry, so storage order is expiry
        # order: expired entries are found from the front without scanning live ones (they are
        # not at the front of ``_entries``, since a hit makes an old entry most recent).
        # Only kept when there is a TTL.
        self._by_age: OrderedDict[K, None] = OrderedDict()
        # tag -> keys stored with it (a dict used as an ordered set). Untagged entries ("")
        # are not indexed.
        self._tags: dict[str, dict[K, None]] = {}
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0

    def get(self, key: K) -> V | None:
        """The value stored under ``key``, now the most recently used; ``None`` if there is
        none or it has expired (an expired entry is removed). Either way counts a hit or a
        miss."""
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            return None
        if self._expired(entry, self._clock()):
            self._remove(key)
            self._expirations += 1
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return entry.value

    def put(self, key: K, value: V, *, tag: str = "") -> None:
        """Store ``value`` under ``key`` (replacing any previous value and its tag) as the most
        recently used entry, then evict least recently used entries until both bounds hold.

        A value larger than ``max_bytes`` is not stored; any previous value under ``key`` is
        still removed, since it is no longer what the caller holds for that key.

        Raises ``ValueError`` if ``size_of`` returns a negative size.
        """
        size = self._size_of(value)
        if size < 0:
            raise ValueError(f"size_of returned a negative size: {size}")
        now = self._clock()
        if key in self._entries:
            self._remove(key)
        if size > self._max_bytes:
            return
        # Expired entries go first, so they make room before any live entry is evicted.
        self._purge_expired(now)
        self._entries[key] = _Entry(value, size, tag, now)
        self._bytes += size
        if self._ttl_s > 0:
            self._by_age[key] = None
        if tag:
            self._tags.setdefault(tag, {})[key] = None
        # The new entry is last and fits on its own, so this stops before reaching it.
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self._evictions += 1

    def invalidate(self, key: K) -> bool:
        """Drop the entry under ``key``. Returns whether there was one."""
        if key not in self._entries:
            return False
        self._remove(key)
        return True

    def invalidate_tag(self, tag: str) -> int:
        """Drop every entry stored with ``tag``. Returns how many were dropped (0 for the empty
        tag: untagged entries are not grouped)."""
        keys = self._tags.pop(tag, None)
        if not keys:
            return 0
        for key in keys:
            entry = self._entries.pop(key)
            self._bytes -= entry.size
            self._by_age.pop(key, None)
        return len(keys)

    def clear(self) -> None:
        """Drop every entry. The hit, miss, eviction and expiration counters are kept (they
        count over the cache's lifetime)."""
        self._entries.clear()
        self._by_age.clear()
        self._tags.clear()
        self._bytes = 0

    def __len__(self) -> int:
        """The number of live entries (expired ones are dropped first)."""
        self._purge_expired(self._clock())
        return len(self._entries)

    def statistics(self) -> CacheStats:
        """A snapshot of sizes and counters (expired entries are dropped first)."""
        self._purge_expired(self._clock())
        return CacheStats(
            entries=len(self._entries),
            bytes=self._bytes,
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
        )

    def _expired(self, entry: _Entry[V], now: float) -> bool:
        return self._ttl_s > 0 and now - entry.stored_at >= self._ttl_s

    def _purge_expired(self, now: float) -> None:
        # O(expired entries): stops at the first entry still within its TTL.
        while self._by_age:
            key = next(iter(self._by_age))
            if not self._expired(self._entries[key], now):
                return
            self._remove(key)
            self._expirations += 1

    def _remove(self, key: K) -> None:
        """Drop ``key``'s entry from every structure (it must be there)."""
        entry = self._entries.pop(key)
        self._bytes -= entry.size
        self._by_age.pop(key, None)
        if entry.tag:
            keys = self._tags[entry.tag]
            del keys[key]
            if not keys:
                # No empty sets left behind: the index stays as small as the tagged entries.
                del self._tags[entry.tag]
