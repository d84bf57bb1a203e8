"""The response cache's entries in Redis/Valkey (:class:`~ailb.caches.response.ResponseStore`):
every gateway hits what any of them stored. ``SET key answer PX ttl``: the server expires
entries; its ``maxmemory`` policy (e.g. ``allkeys-lru``) bounds the total, not AILB.

One entry is at most ``max_entry_bytes`` (default 1 MiB: a larger answer is not cached):
a large value holds the single-threaded server while it is copied, and no chat answer
needs more (1 MiB is about 250k tokens). Errors are StoreUnavailable; the ResponseCache turns
them into a miss.
"""

from __future__ import annotations

from ailb.caches.lru import CacheStats
from ailb.shared.redis import Redis

PREFIX = "ailb:response:"
MAX_ENTRY_BYTES = 1 << 20


class RedisResponses:
    def __init__(self, redis: Redis, ttl_s: float,
                 max_entry_bytes: int = MAX_ENTRY_BYTES) -> None:
        """``ttl_s``: how long an entry lives (``CACHE.response_ttl_s``; 0: a day, so that
        nothing is kept forever in a shared server)."""
        self._redis = redis
        self._ttl_s = ttl_s if ttl_s > 0 else 86400.0
        self._max = max_entry_bytes

    async def get(self, key: str) -> bytes | None:
        """Raises StoreUnavailable."""
        return await self._redis.get(PREFIX + key)

    async def put(self, key: str, answer: bytes) -> None:
        """Raises StoreUnavailable."""
        if len(answer) <= self._max:
            await self._redis.set(PREFIX + key, answer, self._ttl_s)

    def statistics(self) -> CacheStats | None:
        return None  # the server's own (INFO keyspace); not counted here
