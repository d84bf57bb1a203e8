"""What the gateway does while shared state cannot be reached, and what it says about it.

Two parts can fail on their own: the **store** (keys, spend, budgets, the ledger: SQLite,
or PostgreSQL with ``DATABASE_URL``) and the **counters** (rate limits and parallel slots: Redis
or Valkey with ``REDIS_URL``, else the store itself). The policy, stated once (README,
"Scaling out"):

* Budgets fail closed: without the store no virtual-key request is admitted (503 with
  Retry-After, code ``key_store_unavailable``): a budget is never exceeded, whatever fails.
  Admin-key requests need no store and keep being served; keys are already in memory.
* Rate limits follow ``SHARED.rate_limits_on_outage``: ``share`` (the default) admits on this
  gateway's own share of each limit (the limit divided by ``SHARED.instances`` times the
  workers), so all gateways together stay near the limit; ``closed`` refuses (503);
  ``open`` admits without rate limits.
* Each part is marked down on its first failure and up on its next success: requests keep
  trying it, so recovery needs no restart. ``/healthz`` and ``/readyz`` show the parts, and
  ``ailb_shared_state_up{part}`` is 0 while a part is down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import trio

from ailb.accounting.reservations import KeyLimits
from ailb.errors import StoreUnavailable

Part = Literal["store", "counters"]
RETRY_AFTER_S = 2.0  # what a refusal during an outage tells the client to wait


@dataclass(frozen=True, slots=True)
class OutagePolicy:
    rate_limits: str = "share"  # share | closed | open
    share: int = 1  # gateways sharing the limits: instances x workers
    lease_s: float = 900.0

    def shared_limits(self, limits: KeyLimits) -> KeyLimits:
        """This gateway's share of the rate limits (at least 1 of each), budget left out."""
        def part(value: int | None) -> int | None:
            return None if value is None else max(1, math.floor(value / self.share))

        return KeyLimits(part(limits.rpm), part(limits.tpm), part(limits.parallel), None)


@dataclass(slots=True)
class PartState:
    up: bool = True
    error: str | None = None
    since: float = field(default_factory=time.time)
    failures: int = 0


class SharedHealth:
    """Up or down per part, as the last call to it went; reported by /healthz and /readyz."""

    def __init__(self, parts: tuple[Part, ...],
                 on_change: Callable[[Part, bool], None] = lambda part, up: None) -> None:
        self._parts = {part: PartState() for part in parts}
        self._on_change = on_change
        for part in parts:
            on_change(part, True)

    def failed(self, part: Part, error: str) -> None:
        state = self._parts.get(part)
        if state is None:
            return
        state.failures += 1
        state.error = error
        if state.up:
            state.up, state.since = False, time.time()
            self._on_change(part, False)

    def succeeded(self, part: Part) -> None:
        state = self._parts.get(part)
        if state is None or state.up:
            return
        state.up, state.error, state.since = True, None, time.time()
        self._on_change(part, True)

    def up(self, part: Part) -> bool:
        state = self._parts.get(part)
        return state is None or state.up

    async def probe_forever(self, part: Part, ping: Callable[[], Awaitable[None]],
                            interval_s: float = 1.0) -> None:
        """While ``part`` is down, ``ping`` it every ``interval_s``: it comes back up even
        when no request tries it (``/readyz`` said 503, so no request may come)."""
        while True:
            await trio.sleep(interval_s)
            if self.up(part):
                continue
            try:
                await ping()
            except StoreUnavailable as exc:
                self.failed(part, exc.message)
            else:
                self.succeeded(part)

    def report(self) -> dict[str, dict[str, object]]:
        return {part: {"up": s.up, "since": round(s.since, 3), "error": s.error,
                       "failures": s.failures} for part, s in self._parts.items()}
