"""The admission gate: per-key model permission, parallel, RPM and TPM limits, and budget
reservations, checked and taken in one step before a call and settled after it. The math is
:mod:`ailb.accounting.reservations` (pure, imported as ``rules``); here it meets the clock and
the store.

Rules, stated once:

* A key's state lives here, in memory. A check and its take are one pure call with no await
  around it, so limits and budgets hold with any number of requests in flight (Trio runs one
  task at a time between awaits).
* When other gateways share the keys (worker processes, or instances on a shared database or
  Redis), the rate limits (RPM, TPM, parallel) are taken from shared counters instead
  (:mod:`ailb.accounting.shared_limits`: one atomic step in the store or in Redis), and the
  state here keeps only this gateway's spend: a cheap first check of the budget, whose real
  check is the store's, across every gateway.
* Write-ahead: the reservation's worst-case cost is then written to the key's spend in the
  store, and admission awaits that write; a process killed mid-call leaves the spend at or above
  what was served, never below. If the write fails, the take is undone and the request is
  refused (``StoreUnavailable``, 503); if the store's own budget check refuses it (a gateway
  sharing the store spent it first), ``BudgetExceeded`` (402).
* The first request of a key in a period reads that period's spend from the store.
* Settling corrects the state at once; the store is corrected by the ledger writer, which writes
  each request's row and settlement together, in batches (retried while the store refuses).
  Until then the spend stays at the worst case (never below what was served). A settle never
  fails a request.
* A key's team is a second subject with the same rules (:mod:`ailb.accounting.teams`): its
  state, reservation and counters under ``team:<id>``, taken after the key's, settled with it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import trio

from ailb import logs
from ailb.accounting import reservations as rules
from ailb.accounting import teams
from ailb.accounting.ledger import Entry, Ledger
from ailb.accounting.outage import RETRY_AFTER_S, SharedHealth
from ailb.accounting.periods import period_end, period_of, period_start
from ailb.accounting.reservations import KeyLimits, KeyState, Refusal, Reservation
from ailb.accounting.shared_limits import Lease, SharedLimiter, refusal_error
from ailb.accounting.store import LedgerRow, Settlement, Store
from ailb.accounting.tickets import Hold, Ticket, limits_of, require_model
from ailb.errors import GatewayError, StoreUnavailable
from ailb.keys.records import KeyRecord, TeamRecord
from ailb.model import Usage
from ailb.pricing import PriceTable

__all__ = ["Gate", "Hold", "Ticket", "limits_of", "require_model"]  # the last four: tickets.py
_log = logging.getLogger("ailb.gate")
T = TypeVar("T")


class Gate:
    def __init__(self, store: Store, ledger: Ledger, prices: PriceTable, period_kind: str,
                 default_max_tokens: int, wall_clock: Callable[[], datetime],
                 monotonic: Callable[[], float], limiter: SharedLimiter | None = None,
                 health: SharedHealth | None = None,
                 team_of: Callable[[str], TeamRecord | None] = lambda team_id: None) -> None:
        self._store = store
        self._teams = team_of  # a team's record by id (None: no such team, no team limits)
        # None: this gateway alone holds its keys' rate limits, in memory (exact and free);
        # else they are shared with other gateways and taken there
        self._limiter = limiter
        self._health = health or SharedHealth(())
        self._ledger = ledger
        self._prices = prices
        self._period_kind = period_kind
        self._default_max_tokens = default_max_tokens
        self._wall = wall_clock
        self._now = monotonic
        self._states: dict[str, KeyState] = {}
        # the current period and its bounds (wall-clock timestamps): computed again only
        # when the clock leaves them, not for every request
        self._period = ("", 0.0, 0.0)

    def configure(self, prices: PriceTable, period_kind: str, default_max_tokens: int) -> None:
        """New prices and period rules (a reload); tickets already issued settle as they are."""
        self._prices = prices
        self._period_kind = period_kind
        self._default_max_tokens = default_max_tokens
        self._period = ("", 0.0, 0.0)

    def period(self) -> str:
        now = self._wall()
        period, start, end = self._period
        if start <= now.timestamp() < end:
            return period
        kind = self._period_kind
        period = period_of(now, kind)
        self._period = (period, period_start(now, kind).timestamp(),
                        period_end(now, kind).timestamp())
        return period

    def wall_now(self) -> datetime:
        return self._wall()

    async def spent(self, key_id: str, period: str) -> float:
        """Spend recorded for the period (reservations of calls in flight included). Raises
        StoreUnavailable."""
        state = self._states.get(key_id)
        if self._limiter is None and state is not None and state.period == period:
            return state.spent  # this gateway alone spends for its keys
        # shared: what every gateway spent, less what this one's settlements will give back
        return await self._guarded(self._store.read(key_id, period)) - \
            self._ledger.credit(key_id, period)

    async def usage(self, key_id: str, since: datetime) -> list[dict[str, Any]]:
        """The key's ledger since ``since``: requests, tokens and cost per day and model.
        Raises StoreUnavailable."""
        return await self._store.usage(key_id, since)

    async def report(self, start: datetime, end: datetime, group_by: Sequence[str],
                     filters: Mapping[str, str]) -> list[dict[str, Any]]:
        """The ledger summed per group (see ``Store.spend_report``). Raises StoreUnavailable."""
        return await self._store.spend_report(start, end, group_by, filters)

    async def _state(self, key_id: str) -> KeyState:
        """The key's state in the current period; reads the period's spend from the store the
        first time. Returns with no checkpoint after the state was read. Raises
        StoreUnavailable."""
        while True:
            period = self.period()
            state = self._states.get(key_id, KeyState())
            if state.period == period:
                return state
            spent = await self._guarded(self._store.read(key_id, period))
            if self.period() == period:  # else the period changed while we read: again
                state = self._states[key_id] = rules.roll(
                    self._states.get(key_id, KeyState()), period, spent)
                return state

    async def admit(self, key: KeyRecord, model: str, targets: Sequence[tuple[str, str]],
                    prompt_tokens: int, max_tokens: int | None, choices: int = 1) -> Ticket:
        """Reserve what the request may use, from the key and then from its team (see
        :mod:`ailb.accounting.teams`). ``targets``: (upstream model, provider type) of every
        deployment that may serve. Returns once the reservations are in the store. Raises
        PermissionDenied (403), RateLimited (429), BudgetExceeded (402) or StoreUnavailable
        (503); nothing stays reserved when it raises."""
        require_model(key, model)
        tokens = rules.demanded_tokens(prompt_tokens, max_tokens, self._default_max_tokens,
                                      choices)
        worst = max((self._prices.price(m, provider).worst_cost(
            prompt_tokens, tokens - prompt_tokens, provider) for m, provider in targets),
            default=0.0)
        demand = rules.Demand(prompt_tokens, tokens, worst)
        held = await self._take(key.id, limits_of(key), demand)
        ticket = Ticket(key, held.reservation, held.reservation_id, held.headers,
                        lease=held.lease)
        team = self._teams(key.team) if key.team else None
        if team is not None:
            try:
                ticket.team = await self._take(teams.subject(team.id), teams.limits_of(team),
                                               demand)
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    await self._give_back(held)
                if isinstance(exc, GatewayError):
                    raise teams.team_error(exc, team.id) from None
                raise
        return ticket

    async def _take(self, subject: str, limits: KeyLimits, demand: rules.Demand) -> Hold:
        """One subject's (a key's or a team's) check and take: in memory, in the shared
        counters, then the write-ahead reservation in the store."""
        # shared: the rate limits are taken from the shared counters and the budget is the
        # store's to check (this gateway's view of the spend lags the other gateways')
        local = limits if self._limiter is None else KeyLimits()
        state = await self._state(subject)
        # from here to the take: no await, so no other request in between
        now = self._now()
        outcome = rules.reserve(state, local, demand, now)
        if isinstance(outcome, Refusal):
            raise refusal_error(outcome)
        state, reservation = outcome
        self._states[subject] = state
        headers = rules.headers(state, local, now)
        lease: Lease | None = None
        try:
            if self._limiter is not None:
                lease = await self._limiter.take(subject, limits, demand)
                headers.update(lease.headers)
            with trio.CancelScope(shield=True):  # written or not: never left half-way
                reserved = await self._guarded(self._store.reserve(
                    subject, reservation.period, demand.worst_usd,
                    self._store_budget(subject, limits, reservation.period)))
        except BaseException:
            self._undo(subject, reservation)
            if lease is not None and self._limiter is not None:
                await self._limiter.release(lease, 0, cancel=True)
            raise
        if reserved is None:  # the store's budget check: another gateway spent it
            state = self._undo(subject, reservation)
            if lease is not None and self._limiter is not None:
                await self._limiter.release(lease, 0, cancel=True)
            assert limits.budget_usd is not None
            now = self._now()
            shown = local if self._limiter is None else KeyLimits(budget_usd=limits.budget_usd)
            raise refusal_error(rules.budget_refusal(rules.current(state, shown, now),
                                                    limits.budget_usd, shown, demand, now))
        if self._limiter is not None:  # the store's spend is every gateway's: take it
            spent = self._learn_spent(subject, reservation.period, reserved.spent)
            headers.update(rules.spend_headers(spent, limits.budget_usd))
        return Hold(subject, reservation, reserved.id, headers, lease)

    async def _give_back(self, held: Hold) -> None:
        """Undo an admitted subject's take (its team refused the request): its state, its
        lease, and its reservation in the store settled at nothing. A store that cannot be
        reached keeps the reservation at its worst case (never below what was served)."""
        self._undo(held.subject, held.reservation)
        if held.lease is not None and self._limiter is not None:
            await self._limiter.release(held.lease, 0, cancel=True)
        try:
            await self._guarded(self._store.settle([Settlement(held.reservation_id, 0.0)], []))
        except StoreUnavailable as exc:
            logs.event(_log, "a reservation stays charged at its worst case", logging.WARNING,
                       subject=held.subject, error=exc.message)

    def _store_budget(self, subject: str, limits: KeyLimits, period: str) -> float | None:
        """The budget the store checks its spend against. Alone, this gateway's exact check in
        memory has passed; the store's spend still holds the worst case of settlements on
        their way (the ledger's credit), so they are added back. Shared, the store's check is
        the real one and counts no credit: one read before the reservation's await could be
        committed while the reservation waits for its turn, and count twice. Near the budget
        a request may then be refused while a give-back is being written (one commit, with
        ledger_ack), never admitted past it."""
        if limits.budget_usd is None or self._limiter is not None:
            return limits.budget_usd
        return limits.budget_usd + self._ledger.credit(subject, period)

    def _learn_spent(self, key_id: str, period: str, store_spent: float) -> float:
        """This gateway's state takes the spend the store holds (less the give-backs of its
        own settlements not written yet); returns it."""
        spent = store_spent - self._ledger.credit(key_id, period)
        state = self._states.get(key_id)
        if state is not None and state.period == period:
            self._states[key_id] = replace(state, spent=spent)
        return spent

    async def _guarded(self, call: Awaitable[T]) -> T:
        """A store call, its outcome told to the health board. A failure is StoreUnavailable
        with a Retry-After: budgets fail closed."""
        try:
            result = await call
        except StoreUnavailable as exc:
            self._health.failed("store", exc.message)
            if exc.retry_after_s is None:
                exc.retry_after_s = RETRY_AFTER_S
            raise
        self._health.succeeded("store")
        return result

    def _undo(self, key_id: str, reservation: Reservation) -> KeyState:
        state = self._states[key_id] = rules.cancel(self._states[key_id], reservation,
                                                   self._now())
        return state

    async def settle(self, ticket: Ticket, usage: Usage | None, chunks_seen: int,
                     served_by: tuple[str, str, str] | None, request_id: str, status: int,
                     latency_s: float) -> float:
        """Replace the reservation by the actual cost; release limits; queue the ledger row
        with the reservation's settlement (the ledger writer writes them in batches, retried
        while the store refuses). ``served_by``: (upstream model, provider type,
        deployment), None if nothing was called. Returns the actual cost once the row is
        queued; shielded from cancellation. Idempotent; never raises StoreUnavailable."""
        if ticket.settled:
            return 0.0
        ticket.settled = True
        key, reservation = ticket.key, ticket.reservation
        usage = rules.charged_usage(usage, reservation.prompt_estimate, chunks_seen, status,
                                   served_by is not None)
        model, provider, deployment = served_by or ("", "", "")
        cost = self._prices.cost(model, provider, usage) if served_by else 0.0
        state = self._states.get(key.id)
        if state is not None:
            state = self._states[key.id] = rules.settle(state, reservation, usage.total_tokens,
                                                       cost, self._now())
            if state.period == reservation.period:
                ticket.headers.update(rules.spend_headers(state.spent, key.monthly_budget_usd))
        team = ticket.team
        if team is not None and team.subject in self._states:
            self._states[team.subject] = rules.settle(self._states[team.subject],
                                                      team.reservation, usage.total_tokens,
                                                      cost, self._now())
        with trio.CancelScope(shield=True):  # a client that left must still be charged
            try:
                if self._limiter is not None:
                    for lease in (ticket.lease, team.lease if team else None):
                        if lease is not None:
                            await self._limiter.release(lease, usage.total_tokens)
            finally:  # whatever the release did, the row is queued
                await self._record(ticket, usage, cost, model, deployment, request_id,
                                   status, latency_s)
        return cost

    async def _record(self, ticket: Ticket, usage: Usage, cost: float, model: str,
                      deployment: str, request_id: str, status: int, latency_s: float) -> None:
        key, reservation, team = ticket.key, ticket.reservation, ticket.team
        await self._ledger.record(Entry(LedgerRow(
                request_id, self._wall(), key.id, model, deployment, usage.prompt_tokens,
                usage.completion_tokens, usage.cached_tokens, cost, status,
                round(latency_s * 1000, 3), key.team), Settlement(ticket.reservation_id, cost),
                reservation.period, reservation.usd - cost,
                team_subject=team.subject if team else "",
                team_settlement=Settlement(team.reservation_id, cost) if team else None))
