"""Rate limits (RPM, TPM, parallel) held in counters that several gateways share: the store
(worker processes on one SQLite file, or PostgreSQL) or Redis/Valkey. The math is
:mod:`ailb.accounting.counters`; this is the thin I/O shell the gate calls when the counters are
shared, with the outage policy of :mod:`ailb.accounting.outage` (``share``: this gateway's share
of each limit in memory; ``closed``: 503; ``open``: no rate limit) while they cannot be reached.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ailb import logs
from ailb.accounting import counters as shared
from ailb.accounting import reservations as rules
from ailb.accounting.counters import SharedCounters, Taken
from ailb.accounting.outage import RETRY_AFTER_S, OutagePolicy, SharedHealth
from ailb.accounting.reservations import Demand, KeyLimits, KeyState, Refusal, Reservation
from ailb.errors import BudgetExceeded, GatewayError, RateLimited, StoreUnavailable

_log = logging.getLogger("ailb.limits")
RELEASE_TIMEOUT_S = 5.0  # a release that cannot be made ends with its lease (lease_s)


@dataclass(slots=True)
class Lease:
    """One admitted request's hold on its key's rate limits."""

    key_id: str
    tokens: int
    lease_id: str | None = None  # in the shared counters
    local: Reservation | None = None  # taken from this gateway's share during an outage
    # a shared take that failed on our side (a timeout) may still have happened there: its
    # lease is given back with the request's end
    orphan: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def refusal_error(refusal: Refusal) -> GatewayError:
    """The error a refusal is answered with: BudgetExceeded (402) or RateLimited (429). A
    refusal that waiting cannot lift (no ``retry_after_s``) tells SDKs not to retry."""
    exc: GatewayError
    if refusal.limit == "budget":
        exc = BudgetExceeded(refusal.message)
    else:
        exc = RateLimited(refusal.message, code=refusal.code,
                          retry_after_s=refusal.retry_after_s)
    exc.headers = dict(refusal.headers)
    if refusal.retry_after_s is None:
        exc.headers["x-should-retry"] = "false"
    return exc


def _headers(taken: Taken, limits: KeyLimits) -> dict[str, str]:
    buckets = [b for b in (taken.counters.rpm, taken.counters.tpm) if b is not None]
    now = max((b.updated for b in buckets), default=0.0)  # the shared clock at the take
    out = rules.headers(shared.as_state(taken.counters), limits, now)
    return {k: v for k, v in out.items() if k.startswith("x-ratelimit-")}


class SharedLimiter:
    def __init__(self, counters: SharedCounters, policy: OutagePolicy, health: SharedHealth,
                 monotonic: Callable[[], float],
                 on_fallback: Callable[[str], None] = lambda policy: None) -> None:
        self._counters = counters
        self._policy = policy
        self._health = health
        self._now = monotonic
        self._on_fallback = on_fallback
        self._local: dict[str, KeyState] = {}  # this gateway's shares, during outages only

    async def take(self, key_id: str, limits: KeyLimits, demand: Demand) -> Lease:
        """Take one request and ``demand.tokens`` from the key's shared limits. Returns the
        lease, or raises RateLimited (429) with the refusal, or StoreUnavailable (503) when
        the counters cannot be reached and the policy is ``closed``."""
        limits = KeyLimits(limits.rpm, limits.tpm, limits.parallel, None)
        if limits == KeyLimits():
            return Lease(key_id, demand.tokens)
        lease_id = uuid.uuid4().hex
        try:
            with trio.CancelScope(shield=True):  # taken or not: never left half-way
                outcome = await self._counters.take(key_id, limits, demand.tokens, lease_id,
                                                    self._policy.lease_s)
        except StoreUnavailable as exc:
            self._health.failed("counters", exc.message)
            try:
                lease = self._fallback(key_id, limits, demand, exc)
            except BaseException:
                await self._release_shared(key_id, lease_id, 0, cancel=True)
                raise
            lease.orphan = lease_id
            return lease
        self._health.succeeded("counters")
        if isinstance(outcome, Refusal):
            raise refusal_error(outcome)
        return Lease(key_id, demand.tokens, lease_id, headers=_headers(outcome, limits))

    def _fallback(self, key_id: str, limits: KeyLimits, demand: Demand,
                  exc: StoreUnavailable) -> Lease:
        policy = self._policy.rate_limits
        self._on_fallback(policy)
        if policy == "closed":
            raise StoreUnavailable("Rate limits cannot be checked right now (shared state "
                                   "unavailable); try again shortly.",
                                   code="shared_state_unavailable",
                                   retry_after_s=RETRY_AFTER_S) from exc
        if policy == "open":
            return Lease(key_id, demand.tokens)
        share = self._policy.shared_limits(limits)
        if limits.tpm is not None and demand.tokens > limits.tpm:  # never, outage or not
            raise refusal_error(Refusal("tpm", rules.too_large(demand.tokens, limits.tpm),
                                        None, {}))
        if share.tpm is not None and demand.tokens > share.tpm:  # fits once they are back
            raise RateLimited(
                f"This request reserves {demand.tokens} tokens, more than this gateway's share "
                f"({share.tpm}) of the key's {limits.tpm} tokens per minute while the shared "
                "rate-limit counters cannot be reached; try again shortly.",
                code="tpm_limit_exceeded", retry_after_s=RETRY_AFTER_S)
        now = self._now()
        state = self._local.get(key_id, KeyState())
        outcome = rules.reserve(state, share, Demand(demand.prompt_tokens, demand.tokens, 0.0),
                                now)
        if isinstance(outcome, Refusal):
            raise refusal_error(outcome)
        self._local[key_id], reservation = outcome
        return Lease(key_id, demand.tokens, local=reservation,
                     headers={k: v for k, v in rules.headers(self._local[key_id], share,
                                                             now).items()
                              if k.startswith("x-ratelimit-")})

    async def release(self, lease: Lease, used_tokens: int, cancel: bool = False) -> None:
        """Give back what the request did not use (everything, the request included, when
        ``cancel``). Never raises but Cancelled; a release that fails is logged, and its
        lease ends by itself."""
        unused = max(0, lease.tokens - used_tokens) if not cancel else lease.tokens
        if lease.local is not None:
            state = self._local.get(lease.key_id)
            if state is not None:
                now = self._now()
                self._local[lease.key_id] = (rules.cancel(state, lease.local, now) if cancel
                                             else rules.settle(state, lease.local,
                                                               used_tokens, 0.0, now))
            lease.local = None
        if lease.orphan is not None:  # served on the local share: all of it goes back
            orphan, lease.orphan = lease.orphan, None
            await self._release_shared(lease.key_id, orphan, 0, cancel=True)
        if lease.lease_id is None:
            return
        lease_id, lease.lease_id = lease.lease_id, None
        await self._release_shared(lease.key_id, lease_id, unused, cancel)

    async def _release_shared(self, key_id: str, lease_id: str, unused: int,
                              cancel: bool) -> None:
        """One release in the shared counters, at most RELEASE_TIMEOUT_S; one that cannot be
        made is logged (its lease ends by itself, lease_s after it was taken)."""
        error = f"no answer within {RELEASE_TIMEOUT_S}s"
        try:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + RELEASE_TIMEOUT_S
                await self._counters.release(key_id, lease_id, unused, cancel)
                self._health.succeeded("counters")
                return
        except StoreUnavailable as exc:
            error = exc.message
        self._health.failed("counters", error)
        logs.event(_log, "rate-limit lease not released (it ends by itself)",
                   logging.WARNING, key_id=key_id, error=error)
