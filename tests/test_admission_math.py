"""The pure admission math (ailb.accounting.reservations, ailb.limits.bucket): properties over
any interleaving of reserve / settle / cancel / period roll-over and times, then plain cases.
No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ailb.accounting import reservations as rules
from ailb.accounting.periods import PERIODS, period_end, period_of, period_start
from ailb.accounting.reservations import Demand, KeyLimits, KeyState, Refusal, Reservation
from ailb.limits.bucket import TokenBucket
from ailb.model import Usage
from ailb.pricing import Price

EPS = 1e-6


# --- properties ----------------------------------------------------------------------------------
@st.composite
def limit_sets(draw: st.DrawFn) -> KeyLimits:
    return KeyLimits(
        rpm=draw(st.none() | st.integers(1, 30)),
        tpm=draw(st.none() | st.integers(10, 3000)),
        parallel=draw(st.none() | st.integers(1, 8)),
        budget_usd=draw(st.none() | st.floats(0, 20, allow_nan=False)))


op = st.one_of(
    st.tuples(st.just("reserve"), st.floats(0, 20), st.integers(0, 400), st.integers(1, 1500),
              st.floats(0, 5, allow_nan=False)),
    st.tuples(st.just("settle"), st.floats(0, 20), st.integers(0, 1_000),
              st.floats(0, 1), st.floats(0, 1)),
    st.tuples(st.just("cancel"), st.floats(0, 20), st.integers(0, 1_000)),
    st.tuples(st.just("resettle"), st.floats(0, 20), st.integers(0, 1_000)),
    st.tuples(st.just("roll"), st.floats(0, 20), st.floats(0, 1)),
)


@dataclass
class Model:
    """What the state should hold, kept the naive way."""

    initial: float
    period: str = "p0"
    open: dict[int, Reservation] = field(default_factory=dict)
    settled: list[tuple[Reservation, int, float]] = field(default_factory=list)
    actual: float = 0.0  # settled actual cost in the current period
    rpm_events: list[tuple[float, int]] = field(default_factory=list)  # (time, +taken/-given)
    tpm_events: list[tuple[float, float]] = field(default_factory=list)

    def expected_spent(self) -> float:
        return self.initial + self.actual + sum(r.usd for r in self.open.values()
                                                if r.period == self.period)


def _window_bound_holds(events: list[tuple[float, float]], capacity: float, rate: float,
                        slack: float) -> None:
    """Net tokens taken within any window [t_i, t_j] stay within the bucket's allowance."""
    for i in range(len(events)):
        net = 0.0
        for j in range(i, len(events)):
            net += events[j][1]
            span = events[j][0] - events[i][0]
            assert net <= capacity + span * rate + slack + EPS


@settings(max_examples=300, deadline=None)
@given(limits=limit_sets(), start=st.floats(0, 1), ops=st.lists(op, max_size=60))
def test_any_interleaving_keeps_every_limit(limits: KeyLimits, start: float,
                                            ops: list[tuple]) -> None:  # type: ignore[type-arg]
    initial = start * (limits.budget_usd or 0.0)
    state = rules.roll(KeyState(), "p0", initial)
    model = Model(initial)
    now, periods = 0.0, 0
    for kind, dt, *args in ops:
        now += dt
        if kind == "reserve":
            prompt, ceiling, worst = args
            demand = Demand(prompt, prompt + ceiling, worst)
            before = rules.current(state, limits, now)
            outcome = rules.reserve(state, limits, demand, now)
            too_large = limits.tpm is not None and demand.tokens > limits.tpm
            if isinstance(outcome, Refusal):
                assert outcome.headers == rules.headers(before, limits, now)
                assert outcome.limit != "budget" or limits.budget_usd is not None
                # larger than the whole TPM: refused first, for good (no Retry-After)
                assert too_large == (outcome.limit == "tpm" and outcome.retry_after_s is None)
                continue
            assert not too_large
            state, reservation = outcome
            assert reservation.period == model.period and reservation.number not in model.open
            model.open[reservation.number] = reservation
            model.rpm_events.append((now, 1))
            model.tpm_events.append((now, demand.tokens))
        elif kind in ("settle", "cancel") and model.open:
            number = sorted(model.open)[args[0] % len(model.open)]
            reservation = model.open.pop(number)
            before = rules.current(state, limits, now)
            if kind == "settle":
                tokens = int(reservation.tokens * args[1])
                usd = reservation.usd * args[2]  # actual cost <= reserved
                state = rules.settle(state, reservation, tokens, usd, now)
                again = rules.settle(state, reservation, tokens, usd, now)
                assert again == state  # idempotent
                given_back = reservation.tokens - tokens
                model.settled.append((reservation, tokens, usd))
                if reservation.period == model.period:
                    model.actual += usd
            else:
                state = rules.cancel(state, reservation, now)
                assert rules.cancel(state, reservation, now) == state
                given_back = reservation.tokens
                model.rpm_events.append((now, -1))
            model.tpm_events.append((now, -given_back))
            if before.tpm is not None and state.tpm is not None:
                # a give-back never exceeds its reservation
                back = state.tpm.available(now) - before.tpm.available(now)
                assert -EPS <= back <= reservation.tokens + EPS
        elif kind == "resettle" and model.settled:
            reservation, tokens, usd = model.settled[args[0] % len(model.settled)]
            assert rules.settle(state, reservation, tokens, usd, now) == state
        elif kind == "roll":
            periods += 1
            model.period, model.actual = f"p{periods}", 0.0
            model.initial = args[0] * (limits.budget_usd or 0.0)
            state = rules.roll(state, model.period, model.initial)
        # invariants after every step
        assert state.parallel == len(model.open) >= 0
        assert state.open == frozenset(model.open)
        if limits.parallel is not None:
            assert state.parallel <= limits.parallel
        assert state.spent == pytest.approx(model.expected_spent(), abs=EPS)
        if limits.budget_usd is not None:
            assert state.spent <= limits.budget_usd + EPS  # committed spend within the budget
    if limits.rpm is not None:
        _window_bound_holds([(t, float(n)) for t, n in model.rpm_events], limits.rpm,
                            limits.rpm / 60, 0.0)
    if limits.tpm is not None:
        # no slack: no request takes more than the whole bucket
        _window_bound_holds(model.tpm_events, limits.tpm, limits.tpm / 60, 0.0)
        if state.tpm is not None:
            assert 0 <= state.tpm.tokens <= limits.tpm


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 1000), ops=st.lists(st.tuples(
    st.sampled_from(["take", "give"]), st.floats(0, 30), st.integers(0, 2000)), max_size=40))
def test_a_bucket_stays_within_its_capacity(capacity: int,
                                            ops: list[tuple[str, float, int]]) -> None:
    bucket = TokenBucket.per_minute(capacity, 0.0)
    now = 0.0
    for kind, dt, amount in ops:
        now += dt
        before = bucket.available(now)
        if kind == "take":
            taken = bucket.take(amount, now)
            assert bucket.fits(amount) == (amount <= capacity)
            if taken is None:
                assert before < amount
                continue
            bucket = taken
            assert amount <= capacity and bucket.tokens >= 0  # never more than the whole
            assert bucket.available(now) == pytest.approx(before - amount)
        else:
            bucket = bucket.give_back(amount, now)
            assert before - EPS <= bucket.available(now) <= min(capacity, before + amount) + EPS
        assert bucket.available(now) <= capacity


# --- plain cases ---------------------------------------------------------------------------------
def _reserve(state: KeyState, limits: KeyLimits, demand: Demand,
             now: float) -> tuple[KeyState, Reservation]:
    outcome = rules.reserve(state, limits, demand, now)
    assert not isinstance(outcome, Refusal), outcome
    return outcome


def test_duration_is_openai_reset_format() -> None:
    assert [rules.duration(s) for s in (0.02, 0, 1, 59.5, 360, 3723)] == [
        "20ms", "0ms", "1s", "1m0s", "6m0s", "1h2m3s"]


def test_tpm_reserves_prompt_plus_ceiling_times_choices() -> None:
    assert rules.demanded_tokens(7, 300, 4096, 4) == 7 + 1200
    assert rules.demanded_tokens(7, None, 4096) == 7 + 4096
    assert rules.demanded_tokens(7, 10, 4096, 0) == 17
    assert rules.demanded_tokens(7, 2**63, 4096, 2**63) == 7 + rules.MAX_CEILING_TOKENS
    assert rules.demanded_tokens(7, 10**400, 4096) == 7 + rules.MAX_CEILING_TOKENS


def test_refusals_in_order_with_headers() -> None:
    limits = KeyLimits(rpm=1, tpm=100, parallel=1, budget_usd=1.0)
    state = rules.roll(KeyState(), "2026-11", 0.5)
    state, _ = _reserve(state, limits, Demand(10, 50, 0.1), 0.0)
    refused = rules.reserve(state, limits, Demand(1, 1, 0.0), 0.0)
    assert isinstance(refused, Refusal) and refused.limit == "parallel"
    assert refused.code == "parallel_limit_exceeded" and refused.retry_after_s == 1
    assert refused.headers == {
        "x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s", "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "50", "x-ratelimit-reset-tokens": "30s",
        "x-ailb-key-spend": "0.600000", "x-ailb-budget-remaining": "0.400000"}
    rpm = rules.reserve(state, KeyLimits(rpm=1), Demand(1, 1, 0.0), 30.0)
    assert isinstance(rpm, Refusal) and rpm.limit == "rpm"
    assert rpm.retry_after_s == pytest.approx(30.0)
    budget = rules.reserve(state, KeyLimits(budget_usd=1.0), Demand(1, 1, 0.5), 0.0)
    assert isinstance(budget, Refusal) and budget.limit == "budget"
    assert budget.retry_after_s is None and budget.code == "budget_exceeded"
    assert budget.message == ("This key's budget of $1.00 for 2026-11 cannot cover this request "
                              "(spent $0.6000, this request may cost up to $0.5000).")


def test_a_request_larger_than_the_whole_tpm_is_refused_for_good() -> None:
    limits = KeyLimits(tpm=100, parallel=1)
    full = rules.current(KeyState(), limits, 0.0)
    for now in (0.0, 60.0, 3600.0):  # a full bucket, and waiting, do not help
        refused = rules.reserve(full, limits, Demand(0, 101, 0.0), now)
        assert isinstance(refused, Refusal) and refused.limit == "tpm"
        assert refused.retry_after_s is None and refused.code == "tpm_limit_exceeded"
    assert refused.message == (
        "Request too large for this key's tokens per minute (TPM): limit 100, requested 101 "
        "(the prompt estimate plus max_tokens times n). Lower max_tokens or shorten the "
        "prompt: retrying will not help.")
    state, _ = _reserve(full, limits, Demand(0, 100, 0.0), 0.0)  # the whole bucket is fine
    assert state.tpm is not None and state.tpm.tokens == 0
    # refused before the parallel limit (full now) is looked at: it would never fit anyway
    again = rules.reserve(state, limits, Demand(0, 10**9, 0.0), 0.0)
    assert isinstance(again, Refusal) and again.limit == "tpm" and again.retry_after_s is None
    assert "requested at least 1000000000 " in again.message
    waiting = rules.reserve(state, KeyLimits(tpm=100), Demand(0, 100, 0.0), 30.0)
    assert isinstance(waiting, Refusal) and waiting.retry_after_s == pytest.approx(30.0)


@settings(max_examples=200, deadline=None)
@given(prompt=st.integers(0, 10**6), max_tokens=st.none() | st.integers(1, 10**500),
       choices=st.integers(-3, 10**500), price=st.floats(0, 1e6))
def test_any_number_a_client_sends_gives_a_bounded_exact_demand(
        prompt: int, max_tokens: int | None, choices: int, price: float) -> None:
    """max_tokens of 400 digits or 2**63 (and n alike): the reservation is counted up to
    MAX_CEILING_TOKENS, an exact float, and its cost at any configured price is finite."""
    tokens = rules.demanded_tokens(prompt, max_tokens, 4096, choices)
    ceiling = (max_tokens or 4096) * max(1, choices)
    assert tokens == prompt + min(ceiling, rules.MAX_CEILING_TOKENS)
    assert float(tokens) == tokens < 2**53
    worst = Price(price, price).cost(prompt, tokens - prompt)
    assert worst == worst and worst < float("inf")
    for tpm in (1, 10**9, 2**53):  # the largest limit a key may hold
        outcome = rules.reserve(KeyState(), KeyLimits(rpm=1, tpm=tpm, budget_usd=1e15),
                                Demand(prompt, tokens, worst), 0.0)
        assert isinstance(outcome, Refusal) or tokens <= tpm


def test_settle_gives_back_unused_tokens_and_charges_the_actual_cost() -> None:
    limits = KeyLimits(rpm=10, tpm=1000, parallel=2, budget_usd=5.0)
    state, reservation = _reserve(rules.roll(KeyState(), "p", 1.0), limits,
                                  Demand(100, 600, 0.6), 0.0)
    assert (state.spent, state.parallel) == (pytest.approx(1.6), 1)
    settled = rules.settle(state, reservation, 250, 0.2, 0.0)
    assert settled.spent == pytest.approx(1.2) and settled.parallel == 0
    assert settled.tpm is not None and settled.tpm.tokens == pytest.approx(1000 - 250)
    assert settled.rpm == state.rpm  # the request itself was served: not given back
    cancelled = rules.cancel(state, reservation, 0.0)
    assert cancelled.spent == pytest.approx(1.0)
    assert cancelled.rpm is not None and cancelled.rpm.tokens == 10
    assert rules.settle(cancelled, reservation, 0, 0.0, 0.0) == cancelled


def test_a_new_period_starts_from_the_store_and_old_reservations_leave_it_alone() -> None:
    limits = KeyLimits(budget_usd=1.0)
    state, old = _reserve(rules.roll(KeyState(), "2026-11", 0.9), limits, Demand(1, 1, 0.1),
                          0.0)
    assert isinstance(rules.reserve(state, limits, Demand(1, 1, 0.1), 0.0), Refusal)
    state = rules.roll(state, "2026-12", 0.0)
    assert rules.roll(state, "2026-12", 5.0) == state  # a known period is kept
    state = rules.settle(state, old, 1, 0.05, 0.0)
    assert state.spent == 0.0 and state.parallel == 0
    state, new = _reserve(state, limits, Demand(1, 1, 0.1), 0.0)
    assert new.period == "2026-12" and state.spent == pytest.approx(0.1)


def test_a_changed_limit_starts_a_full_bucket() -> None:
    state, _ = _reserve(KeyState(), KeyLimits(rpm=1), Demand(0, 0, 0.0), 0.0)
    assert isinstance(rules.reserve(state, KeyLimits(rpm=1), Demand(0, 0, 0.0), 1.0), Refusal)
    state, _ = _reserve(state, KeyLimits(rpm=2), Demand(0, 0, 0.0), 1.0)
    assert state.rpm is not None and state.rpm.capacity == 2 and state.rpm.tokens == 1
    assert rules.current(state, KeyLimits(), 1.0).rpm is None


def test_a_call_cut_short_is_charged_its_prompt_and_chunks() -> None:
    assert rules.charged_usage(None, 40, 6, 502, True) == Usage(40, 6)
    assert rules.charged_usage(None, 40, 0, 499, True) == Usage(40, 0)
    assert rules.charged_usage(None, 40, 0, 499, False) == Usage()
    assert rules.charged_usage(None, 40, 0, 500, True) == Usage()
    assert rules.charged_usage(Usage(3, 4), 40, 6, 200, True) == Usage(3, 4)


@given(prompt=st.integers(0, 10**6), default=st.integers(1, 10**6),
       tpm=st.none() | st.integers(1, 10**7), choices=st.integers(1, 128))
def test_a_default_ceiling_fits_the_tpm_whenever_the_prompt_leaves_room(
        prompt: int, default: int, tpm: int | None, choices: int) -> None:
    """A client that sends no max_tokens is never refused as larger than the whole TPM
    because of a default it did not choose: its ceiling shrinks to fit."""
    ceiling = rules.default_ceiling(prompt, default, tpm, choices)
    assert 1 <= ceiling <= default
    demand = rules.demanded_tokens(prompt, ceiling, default, choices)
    if tpm is not None and prompt + choices <= tpm:
        assert demand <= tpm
    if tpm is None or prompt + default * choices <= tpm:
        assert ceiling == default  # the default when it fits


@given(st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
       st.sampled_from(PERIODS))
def test_a_period_runs_from_its_start_to_its_end(now: datetime, kind: str) -> None:
    """The gate reuses the period it computed while the clock stays within these bounds."""
    start, end = period_start(now, kind), period_end(now, kind)
    assert start <= now < end
    assert period_of(start, kind) == period_of(now, kind) == \
        period_of(end - timedelta(microseconds=1), kind)
    assert period_of(end, kind) != period_of(now, kind)


@given(st.lists(st.sampled_from(["gpt-4o", "gpt-4o-mini-2024", "o3", "claude-3-5-haiku-x",
                                 "llama", "gpt-4", "o1-mini"]), max_size=30))
def test_a_price_found_once_is_the_same_the_next_time(models: list[str]) -> None:
    from ailb.pricing import DEFAULT_PRICES, UNKNOWN_PAID, PriceTable
    table = PriceTable()
    for model in models:
        longest = max((n for n in DEFAULT_PRICES if model.startswith(n)), key=len, default="")
        assert table.price(model, "openai") == DEFAULT_PRICES.get(longest, UNKNOWN_PAID)
