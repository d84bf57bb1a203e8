"""The accounting side of one gateway, assembled from the settings: the store (SQLite or
PostgreSQL), Redis/Valkey when ``REDIS_URL`` is set, where the rate-limit counters live, the
ledger writer, the gate, and the health of the shared parts. The supervisor owns the result and
starts its tasks (the ledger writer, the store probe, the key refresh, the cooldown sharer).

Where the counters live, stated once:

* one gateway alone (one process, no shared store): in the gate's memory (exact, free);
* ``REDIS_URL``: in Redis/Valkey (one Lua script per take);
* else, when other gateways share the store (workers, or ``DATABASE_URL``): in the store.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import trio

from ailb.accounting.counters import SharedCounters
from ailb.accounting.gate import Gate
from ailb.accounting.ledger import Ledger
from ailb.accounting.outage import OutagePolicy, SharedHealth
from ailb.accounting.shared_limits import SharedLimiter
from ailb.config.schema import Settings
from ailb.errors import ConfigError, StoreUnavailable
from ailb.keys.registry import KeyRegistry
from ailb.keys.store import SqliteStore
from ailb.metrics import Metrics
from ailb.pricing import PriceTable
from ailb.shared.open import RedisShared, open_redis
from ailb.stores.open import AccountingStore, open_store

if TYPE_CHECKING:  # coredis (13 MiB resident) is imported only when REDIS_URL is set
    from ailb.shared.cooldowns import Stats


def shares_state(settings: Settings) -> bool:
    """Whether other gateways share this one's keys, spend and limits: several worker
    processes, or a database or Redis/Valkey that other instances use too."""
    return (settings.workers > 1 or bool(settings.shared.database_url.value)
            or bool(settings.shared.redis_url.value))


def outage_policy(settings: Settings) -> OutagePolicy:
    shared = settings.shared
    return OutagePolicy(shared.rate_limits_on_outage, shared.instances * settings.workers,
                        shared.lease_s)


@dataclass(slots=True)
class Accounting:
    store: AccountingStore
    redis: RedisShared | None
    keys: KeyRegistry
    ledger: Ledger
    gate: Gate
    health: SharedHealth
    sharing: bool


async def open_accounting(settings: Settings, stack: AsyncExitStack, metrics: Metrics,
                          wall_clock: Callable[[], datetime]) -> Accounting:
    """Open the store and Redis (closed by ``stack``), load the keys, and build the gate.
    Raises ConfigError when the store cannot be opened or read."""
    store = await open_store(settings)  # PostgreSQL with DATABASE_URL, else SQLite
    stack.push_async_callback(store.aclose)
    redis = await stack.enter_async_context(open_redis(settings))
    try:
        keys = await KeyRegistry.load(store, wall_clock)
    except StoreUnavailable as exc:
        if settings.shared.database_url.value:  # it answered a moment ago: exit 1, try again
            raise ConnectionError(f"DATABASE_URL: the key store cannot be read: {exc}") from exc
        raise ConfigError("AILB_DATA_DIR", f"the key store cannot be read: {exc}") from exc
    # the embedded store group-commits the calls queued on its thread: each request writes its
    # acknowledged row itself (see Ledger); PostgreSQL's are batched by the writer task
    ledger = Ledger(store, flush_s=settings.accounting.ledger_flush_s,
                    ack=settings.accounting.ledger_ack,
                    direct=store if isinstance(store, SqliteStore) else None)
    sharing = shares_state(settings)
    health = SharedHealth(("store", "counters") if sharing else ("store",),
                          lambda part, up: metrics.shared_up.labels(part=part).set(int(up)))
    counters: SharedCounters = redis.counters if redis is not None else store
    limiter = None if not sharing else SharedLimiter(
        counters, outage_policy(settings), health, trio.current_time,
        lambda policy: metrics.rate_limit_fallbacks.labels(policy=policy).inc())
    gate = Gate(store, ledger, PriceTable(settings.prices), settings.accounting.period,
                settings.accounting.default_max_tokens, wall_clock, trio.current_time,
                limiter, health, keys.teams.get)
    return Accounting(store, redis, keys, ledger, gate, health, sharing)


async def run_accounting(accounting: Accounting, settings: Settings, nursery: trio.Nursery,
                         stats: Stats) -> None:
    """Start the accounting tasks in ``nursery``: the ledger writer, the probe of a shared part
    that is down, the key refresh (keys changed by another gateway) and the cooldown sharer."""
    health = accounting.health
    await nursery.start(accounting.ledger.run)
    nursery.start_soon(health.probe_forever, "store", accounting.store.ping)
    if accounting.redis is not None:
        nursery.start_soon(health.probe_forever, "counters", accounting.redis.client.ping)
        await nursery.start(accounting.redis.cooldowns.run, stats)
    if accounting.sharing:  # keys changed by another gateway: live here within key_refresh_s
        await nursery.start(
            accounting.keys.refresh_forever, settings.shared.key_refresh_s,
            lambda exc: health.failed("store", exc.message), lambda: health.succeeded("store"))
