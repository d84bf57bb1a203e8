"""The exact-match response cache (``CACHE.response``): whole answers to deterministic requests.

A request is cacheable when its answer is pinned (``temperature`` 0 or a
``seed``; see :func:`~ailb.caches.keys.is_deterministic`). The key is the body as it goes
upstream (memory and retrieved context included, so a changed context is a different key) and
the scope: the caller's key id (``response_scope: key``, the default: no key sees another's
answers) or one scope for every key (``shared``). A hit is answered without calling upstream,
costs the key nothing, and says ``x-ailb-cache: hit``.

Where the entries live is a :class:`ResponseStore`: this process's bounded LRU
(:class:`LocalResponses`, the default) or Redis/Valkey with ``REDIS_URL``
(:class:`ailb.shared.responses.RedisResponses`), where every gateway hits what any of them
stored. Both are awaited. A lookup in a store that fails is a miss, counted as
``result="unavailable"`` too; a put that fails is dropped: the cache never fails a request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from ailb.caches.keys import is_deterministic, response_cache_key
from ailb.caches.lru import BoundedCache, CacheStats
from ailb.errors import StoreUnavailable
from ailb.metrics import Metrics

T = TypeVar("T")


class ResponseStore(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The entry under ``key``, or None. May raise StoreUnavailable."""
        ...

    async def put(self, key: str, answer: bytes) -> None:
        """Store (or skip: too large) ``answer``. May raise StoreUnavailable."""
        ...

    def statistics(self) -> CacheStats | None:
        """Sizes and counters when the store keeps them (None: it does not)."""
        ...


class LocalResponses:
    """The entries in this process: a :class:`BoundedCache` (no I/O, never fails)."""

    def __init__(self, cache: BoundedCache[str, bytes]) -> None:
        self._cache = cache

    async def get(self, key: str) -> bytes | None:
        return self._cache.get(key)

    async def put(self, key: str, answer: bytes) -> None:
        self._cache.put(key, answer)

    def statistics(self) -> CacheStats:
        return self._cache.statistics()


class ResponseCache:
    def __init__(self, store: ResponseStore, scope: str, metrics: Metrics) -> None:
        self._store = store
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

    async def get(self, key: str, usable: Callable[[bytes], T | None]) -> T | None:
        """The cached answer as ``usable`` makes it, or None (an answer ``usable`` cannot
        use, e.g. one a short stream cannot replay, is a miss; so is a store that failed).
        Counted as a hit or a miss. Never raises StoreUnavailable."""
        try:
            raw = await self._store.get(key)
        except StoreUnavailable:
            self._metrics.cache.labels(cache="response", result="unavailable").inc()
            raw = None
        answer = None if raw is None else usable(raw)
        self._metrics.cache.labels(cache="response",
                                   result="miss" if answer is None else "hit").inc()
        return answer

    async def put(self, key: str, answer: bytes) -> None:
        """Store ``answer``; dropped when the store fails (the lookups that miss it are
        counted). Never raises StoreUnavailable."""
        try:
            await self._store.put(key, answer)
        except StoreUnavailable:
            return
        stats = self._store.statistics()
        if stats is not None:
            self._metrics.cache_entries.labels(cache="response").set(stats.entries)
            self._metrics.cache_bytes.labels(cache="response").set(stats.bytes)

    def statistics(self) -> CacheStats | None:
        return self._store.statistics()
