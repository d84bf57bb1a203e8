"""The exact-match response cache (``CACHE.response``): whole answers to deterministic requests.

A request is cacheable when its answer is pinned (``temperature`` 0 or a
``seed``; see :func:`~ailb.caches.keys.is_deterministic`). The key is the body as it goes
upstream (memory and retrieved context included, so a changed context is a different key) and
the scope: the caller's key id (``response_scope: key``, the default: no key sees another's
answers) or one scope for every key (``shared``). A hit is answered without calling upstream,
costs the key nothing, and says ``x-ailb-cache: hit``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ailb.caches.keys import is_deterministic, response_cache_key
from ailb.caches.lru import BoundedCache, CacheStats
from ailb.metrics import Metrics

T = TypeVar("T")


class ResponseCache:
    def __init__(self, cache: BoundedCache[str, bytes], scope: str, metrics: Metrics) -> None:
        self._cache = cache
        self._scope = scope
        self._metrics = metrics

    def key(self, key_id: str, body: Mapping[str, Any]) -> str | None:
        """The request's cache key, or None when its answer must not be cached. Streamed and
        non-streamed requests share entries (a stream is recorded, and replayed from one)."""
        if not is_deterministic(body):
            return None
        try:
            return response_cache_key(key_id if self._scope == "key" else "shared", body)
        except (TypeError, ValueError):
            return None

    def get(self, key: str, usable: Callable[[bytes], T | None]) -> T | None:
        """The cached answer as ``usable`` makes it, or None (an answer ``usable`` cannot
        use, e.g. one a short stream cannot replay, is a miss). Counted as a hit or a miss."""
        raw = self._cache.get(key)
        answer = None if raw is None else usable(raw)
        self._metrics.cache.labels(cache="response",
                                   result="miss" if answer is None else "hit").inc()
        return answer

    def put(self, key: str, answer: bytes) -> None:
        self._cache.put(key, answer)
        stats = self._cache.statistics()
        self._metrics.cache_entries.labels(cache="response").set(stats.entries)
        self._metrics.cache_bytes.labels(cache="response").set(stats.bytes)

    def statistics(self) -> CacheStats:
        return self._cache.statistics()
