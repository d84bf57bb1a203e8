"""The admission gate: per-key model permission, parallel, RPM and TPM limits, and budget
reservations, checked and taken in one step before a call and settled after it.

Rules, stated once:

* Nothing here awaits, so a check and its take happen with no other request in between: limits
  and budgets hold with any number of requests in flight.
* RPM and TPM are token buckets with a whole minute's burst. A request reserves its estimated
  prompt tokens plus ``max_tokens`` (or ``ACCOUNTING.default_max_tokens``); after the call the
  tokens it did not use are given back.
* Budget: the worst-case cost (the same tokens at the route's most expensive target) is
  reserved. A reservation that does not fit in what is left of the period's budget is refused
  with 402. The reservation is also written to the key's spend in the database at once, and
  corrected to the actual cost when the call ends: a process killed mid-call leaves the counter
  at or above what was served, never below.
* Streams are settled from their usage; a stream cut or abandoned before its usage arrived is
  settled from the prompt estimate and the chunks already relayed (about one token each).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ailb.accounting.ledger import Ledger
from ailb.accounting.periods import period_of
from ailb.errors import BudgetExceeded as BudgetExceeded  # re-export; moved
from ailb.errors import GatewayError, PermissionDenied, RateLimited
from ailb.keys.records import KeyRecord
from ailb.keys.store import LedgerRow, Store
from ailb.limits.bucket import TokenBucket
from ailb.model import Usage
from ailb.pricing import PriceTable


@dataclass(slots=True)
class Ticket:
    """One admitted request's reservations; settled exactly once."""

    key: KeyRecord
    period: str
    reserved_usd: float
    reserved_tokens: int
    prompt_estimate: int
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def require_model(key: KeyRecord, model: str) -> None:
    """Raises PermissionDenied unless ``key`` may use ``model``."""
    if not key.allows_model(model):
        raise PermissionDenied(f"This key may not use the model `{model}`.", param="model",
                               code="model_not_allowed")


class Gate:
    def __init__(self, store: Store, ledger: Ledger, prices: PriceTable, period_kind: str,
                 default_max_tokens: int, wall_clock: Callable[[], datetime],
                 monotonic: Callable[[], float]) -> None:
        self._store = store
        self._ledger = ledger
        self._prices = prices
        self._period_kind = period_kind
        self._default_max_tokens = default_max_tokens
        self._wall = wall_clock
        self._now = monotonic
        self._spend: dict[str, dict[str, float]] = {}  # period -> key id -> committed USD
        self._reserved: dict[str, float] = {}
        self._parallel: dict[str, int] = {}
        self._rpm: dict[str, TokenBucket] = {}
        self._tpm: dict[str, TokenBucket] = {}

    def configure(self, prices: PriceTable, period_kind: str, default_max_tokens: int) -> None:
        """New prices and period rules (a reload); tickets already issued settle as they are."""
        self._prices = prices
        self._period_kind = period_kind
        self._default_max_tokens = default_max_tokens

    def spent(self, key_id: str, period: str) -> float:
        """Spend recorded for the period (reservations of calls in flight included)."""
        if period not in self._spend:
            self._spend[period] = self._store.spend(period)
        return self._spend[period].get(key_id, 0.0)

    def period(self) -> str:
        return period_of(self._wall(), self._period_kind)

    def wall_now(self) -> datetime:
        return self._wall()

    def usage(self, key_id: str, since: datetime) -> list[dict[str, Any]]:
        """The key's ledger since ``since``: requests, tokens and cost per day and model."""
        return self._store.usage(key_id, since)

    def _bucket(self, table: dict[str, TokenBucket], key_id: str, limit: int,
                now: float) -> TokenBucket:
        bucket = table.get(key_id)
        if bucket is None or bucket.capacity != limit:
            bucket = table[key_id] = TokenBucket.per_minute(limit, now)
        return bucket

    def admit(self, key: KeyRecord, model: str, targets: Sequence[tuple[str, str]],
              prompt_tokens: int, max_tokens: int | None, choices: int = 1) -> Ticket:
        """``targets``: (upstream model, provider type) of every deployment that may serve."""
        # Check everything, then take everything. Raises PermissionDenied (403), RateLimited
        # (429) or BudgetExceeded (402).
        require_model(key, model)
        now = self._now()
        # n choices each up to max_tokens: the completion ceiling is their product
        tokens = prompt_tokens + (max_tokens or self._default_max_tokens) * max(1, choices)
        rpm = None if key.rpm_limit is None else self._bucket(self._rpm, key.id, key.rpm_limit,
                                                              now)
        tpm = None if key.tpm_limit is None else self._bucket(self._tpm, key.id, key.tpm_limit,
                                                              now)
        period = self.period()

        def refuse(exc: GatewayError) -> GatewayError:
            exc.headers = self._headers(key, rpm, tpm, now, self.spent(key.id, period))
            return exc

        parallel = self._parallel.get(key.id, 0)
        if key.max_parallel_requests is not None and parallel >= key.max_parallel_requests:
            raise refuse(RateLimited(f"This key allows {key.max_parallel_requests} requests in "
                                     "parallel.", code="parallel_limit_exceeded",
                                     retry_after_s=1))
        if rpm is not None and rpm.available(now) < 1:
            raise refuse(RateLimited(f"Rate limit reached: {key.rpm_limit} requests per minute.",
                                     code="rpm_limit_exceeded",
                                     retry_after_s=rpm.seconds_until(1, now)))
        need = min(tokens, tpm.capacity) if tpm is not None else 0
        if tpm is not None and tpm.available(now) < need:
            raise refuse(RateLimited(f"Rate limit reached: {key.tpm_limit} tokens per minute "
                                     f"(this request reserves {tokens}).",
                                     code="tpm_limit_exceeded",
                                     retry_after_s=tpm.seconds_until(need, now)))
        worst = max((self._prices.price(m, provider).cost(prompt_tokens, tokens - prompt_tokens)
                     for m, provider in targets), default=0.0)
        spent = self.spent(key.id, period)
        if key.monthly_budget_usd is not None and spent + worst > key.monthly_budget_usd:
            raise refuse(BudgetExceeded(
                f"This key's budget of ${key.monthly_budget_usd:.2f} for {period} cannot cover "
                f"this request (spent ${spent:.4f}, this request may cost up to ${worst:.4f})."))
        # every check passed: take
        if rpm is not None:
            rpm.take(1, now)
        if tpm is not None:
            tpm.take(tokens, now)
        self._parallel[key.id] = parallel + 1
        self._store.add_spend(key.id, period, worst)  # write-ahead: never behind what is served
        self._spend[period][key.id] = spent + worst
        ticket = Ticket(key, period, worst, tokens, prompt_tokens)
        ticket.headers = self._headers(key, rpm, tpm, now, spent + worst)
        return ticket

    def _headers(self, key: KeyRecord, rpm: TokenBucket | None, tpm: TokenBucket | None,
                 now: float, spent: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, bucket in (("requests", rpm), ("tokens", tpm)):
            if bucket is None:
                continue
            remaining = bucket.available(now)
            headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(remaining)))
            headers[f"x-ratelimit-reset-{kind}"] = duration(
                (bucket.capacity - remaining) / bucket.rate if bucket.rate else 0)
        headers["x-ailb-key-spend"] = f"{spent:.6f}"
        if key.monthly_budget_usd is not None:
            headers["x-ailb-budget-remaining"] = f"{max(0.0, key.monthly_budget_usd - spent):.6f}"
        return headers

    def settle(self, ticket: Ticket, usage: Usage | None, chunks_seen: int,
               served_by: tuple[str, str, str] | None, request_id: str, status: int,
               latency_s: float) -> float:
        """Replace the reservation by the actual cost; release limits; queue the ledger row.
        ``served_by``: (upstream model, provider type, deployment), None if nothing was called.
        Returns the actual cost. Idempotent."""
        if ticket.settled:
            return 0.0
        ticket.settled = True
        key_id = ticket.key.id
        if usage is None and (chunks_seen or (status == 499 and served_by is not None)):
            # cut short (the client left, or the stream broke): the upstream has the prompt
            # and produced what was relayed, about a token a chunk
            usage = Usage(ticket.prompt_estimate, chunks_seen)
        usage = usage or Usage()
        model, provider, deployment = served_by or ("", "", "")
        cost = self._prices.cost(model, provider, usage) if served_by else 0.0
        correction = cost - ticket.reserved_usd
        self._store.add_spend(key_id, ticket.period, correction)
        spend = self._spend.setdefault(ticket.period, {})
        spend[key_id] = spend.get(key_id, 0.0) + correction
        self._parallel[key_id] = max(0, self._parallel.get(key_id, 1) - 1)
        unused = ticket.reserved_tokens - usage.total_tokens
        if unused > 0 and key_id in self._tpm:
            self._tpm[key_id].give_back(unused, self._now())
        ticket.headers["x-ailb-key-spend"] = f"{spend[key_id]:.6f}"
        budget = ticket.key.monthly_budget_usd
        if budget is not None:
            ticket.headers["x-ailb-budget-remaining"] = f"{max(0.0, budget - spend[key_id]):.6f}"
        self._ledger.record(LedgerRow(
            request_id, self._wall(), key_id, model, deployment, usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens, cost, status, round(latency_s * 1000, 3)))
        return cost
