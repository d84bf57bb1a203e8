"""What ``REDIS_URL`` makes shared, opened in one place: :func:`open_redis`.

How the supervisor wires it (nothing here starts on its own)::

    async with open_redis(settings) as shared:        # None without REDIS_URL
        runtime = Runtime(..., on_cooldown=shared.cooldowns.report if shared else None)
        knowledge = await open_knowledge(settings, metrics, routed,
                                         responses=shared.responses if shared else None)
        if shared is not None:
            await nursery.start(shared.cooldowns.run, lambda: services.router.stats())
        # the gate's shared counters: shared.counters (a SharedCounters)
        ...                                           # serve; the block's end closes the client

The client is an ``async with`` (coredis keeps its connections in a task group, a nursery
that the task which opened it must close), hence a context manager rather than open/aclose.
Opening never waits for the server: it may be down at start-up, every call then raises
StoreUnavailable and the client connects once the server answers. coredis (and beartype,
which it brings: about 13 MiB resident and 500 modules) is imported only when ``REDIS_URL``
is set: a gateway without Redis never loads it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ailb.config.schema import Settings

if TYPE_CHECKING:
    from ailb.shared.cooldowns import SharedCooldowns
    from ailb.shared.counters import RedisCounters
    from ailb.shared.redis import Redis
    from ailb.shared.responses import RedisResponses


@dataclass(frozen=True, slots=True)
class RedisShared:
    client: Redis
    counters: RedisCounters  # ailb.accounting.counters.SharedCounters
    cooldowns: SharedCooldowns  # its run() is a task for the supervisor's nursery
    responses: RedisResponses  # ailb.caches.response.ResponseStore, for open_knowledge


@asynccontextmanager
async def open_redis(settings: Settings,
                     timeout_s: float | None = None) -> AsyncIterator[RedisShared | None]:
    """The shared state of ``settings.shared.redis_url`` for the ``async with`` block, or None
    when it is empty. ``timeout_s``: every call's bound (default
    :data:`ailb.shared.redis.DEFAULT_TIMEOUT_S`). Raises ConfigError for a URL that cannot be
    parsed."""
    url = settings.shared.redis_url.value
    if not url:
        yield None
        return
    from ailb.shared.cooldowns import SharedCooldowns
    from ailb.shared.counters import RedisCounters
    from ailb.shared.redis import DEFAULT_TIMEOUT_S, connect
    from ailb.shared.responses import RedisResponses

    bound = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    async with connect(url, bound) as client:
        yield RedisShared(client, RedisCounters(client), SharedCooldowns(client),
                          RedisResponses(client, settings.cache.response_ttl_s))
