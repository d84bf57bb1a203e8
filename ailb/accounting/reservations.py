"""One key's limits and budget as values: reserve before a call, settle (or cancel) after it.
Pure: no I/O, no clock; time is passed in, every function returns new values.

Rules, stated once:

* RPM and TPM are token buckets with a whole minute's burst (:mod:`ailb.limits.bucket`). A
  request reserves one request and its tokens: the prompt estimate plus the completion ceiling
  (``max_tokens``, or the default, times the number of choices), the ceiling counted up to
  ``MAX_CEILING_TOKENS`` whatever number the client sent (so every sum stays an exact float,
  far inside every store's integer and Lua's number, and a cost never overflows).
* A request that reserves more tokens than the key's whole TPM limit could never be admitted:
  it is refused at once, before any other limit is looked at, with no Retry-After (waiting
  cannot help) and ``x-should-retry: false``.
* At most ``parallel`` reservations are open at once.
* Budget: a request reserves its worst-case cost (the same tokens at the route's most expensive
  target). A reservation that would take the period's spend past the budget is refused.
  ``spent`` counts open reservations at their worst case: the settled actual cost replaces it.
* Settling gives back the TPM tokens the call did not use (never more than were reserved) and
  one parallel slot; settling twice changes nothing. Cancelling (the reservation could not be
  recorded) gives back everything, the request included.
* Periods: spend is kept per (key, period). The state holds the current period's spend; a new
  period starts from what the store holds for it (``roll``). A reservation of an earlier period
  settles without touching the new period's spend.
* A call cut short before its usage arrived (a cut stream, a client that left) is charged its
  prompt estimate plus the chunks already relayed, about a token each (``charged_usage``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final, Literal

from ailb.limits.bucket import TokenBucket
from ailb.model import Usage

Limit = Literal["parallel", "rpm", "tpm", "budget"]
# The most completion tokens one request reserves (max_tokens x n), whatever it asks for: a
# billion is above any model's output, and keeps a reservation's cost exact to the micro-dollar
# at any price the configuration allows.
MAX_CEILING_TOKENS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A key's limits; None: no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None
    budget_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Demand:
    """What one request asks for."""

    prompt_tokens: int  # the prompt estimate
    tokens: int  # prompt estimate + completion ceiling: what TPM reserves
    worst_usd: float  # the cost of ``tokens`` at the most expensive target


@dataclass(frozen=True, slots=True)
class Reservation:
    number: int  # unique within the key's state
    period: str
    usd: float
    tokens: int
    prompt_estimate: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was not admitted, with what its error needs."""

    limit: Limit
    message: str
    retry_after_s: float | None  # None: waiting does not help (the budget, a request too large)
    headers: Mapping[str, str]

    @property
    def code(self) -> str:
        return "budget_exceeded" if self.limit == "budget" else f"{self.limit}_limit_exceeded"


@dataclass(frozen=True, slots=True)
class KeyState:
    period: str = ""
    spent: float = 0.0  # the period's spend, open reservations at their worst case included
    parallel: int = 0
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    open: frozenset[int] = frozenset()  # numbers of the reservations not settled yet
    issued: int = 0  # reservations ever made (the next one's number)


def demanded_tokens(prompt_tokens: int, max_tokens: int | None, default_max_tokens: int,
                    choices: int = 1) -> int:
    """What TPM reserves: n choices each up to max_tokens, so the ceiling is their product
    (counted up to ``MAX_CEILING_TOKENS``: the client's numbers may be of any size)."""
    ceiling = max(1, max_tokens or default_max_tokens) * max(1, choices)
    return max(0, prompt_tokens) + min(ceiling, MAX_CEILING_TOKENS)


def default_ceiling(prompt_tokens: int, default_max_tokens: int, tpm_limit: int | None,
                    choices: int = 1) -> int:
    """The ``max_tokens`` to reserve (and send upstream) for a request that set none: the
    configured default, lowered so that the reservation fits a key's whole TPM limit where the
    prompt leaves room (a client that sends no max_tokens must not be refused as "too large"
    by a default it never chose). At least 1."""
    ceiling = max(1, default_max_tokens)
    if tpm_limit is not None:
        room = (tpm_limit - max(0, prompt_tokens)) // max(1, choices)
        ceiling = min(ceiling, room)
    return max(1, ceiling)


def roll(state: KeyState, period: str, spent: float) -> KeyState:
    """The state in ``period``; ``spent`` (the store's spend for it) is used only when the
    period is a new one for this state."""
    return state if state.period == period else replace(state, period=period, spent=spent)


def _bucket(bucket: TokenBucket | None, limit: int | None, now: float) -> TokenBucket | None:
    if limit is None:
        return None
    if bucket is None or bucket.capacity != limit:  # new, or the limit changed: a full bucket
        return TokenBucket.per_minute(limit, now)
    return bucket.at(now)


def current(state: KeyState, limits: KeyLimits, now: float) -> KeyState:
    """The state with buckets that match ``limits``, refilled up to ``now``."""
    return KeyState(state.period, state.spent, state.parallel,
                    _bucket(state.rpm, limits.rpm, now), _bucket(state.tpm, limits.tpm, now),
                    state.open, state.issued)


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


# the x-ratelimit-* names of each bucket: limit, remaining, reset
_REQUESTS: Final = tuple(f"x-ratelimit-{n}-requests" for n in ("limit", "remaining", "reset"))
_TOKENS: Final = tuple(f"x-ratelimit-{n}-tokens" for n in ("limit", "remaining", "reset"))


def spend_headers(spent: float, budget_usd: float | None) -> dict[str, str]:
    headers = {"x-ailb-key-spend": f"{spent:.6f}"}
    if budget_usd is not None:
        headers["x-ailb-budget-remaining"] = f"{max(0.0, budget_usd - spent):.6f}"
    return headers


def headers(state: KeyState, limits: KeyLimits, now: float) -> dict[str, str]:
    """``x-ratelimit-*`` for the key's buckets, then its spend and what is left of its budget.
    ``state`` should be ``current`` (buckets that match ``limits``)."""
    out: dict[str, str] = {}
    for (limit, left, reset), bucket in ((_REQUESTS, state.rpm), (_TOKENS, state.tpm)):
        if bucket is None:
            continue
        remaining = bucket.available(now)
        out[limit] = str(int(bucket.capacity))
        out[left] = str(max(0, int(remaining)))
        out[reset] = duration((bucket.capacity - remaining) / bucket.rate if bucket.rate else 0)
    out["x-ailb-key-spend"] = f"{state.spent:.6f}"
    if limits.budget_usd is not None:
        out["x-ailb-budget-remaining"] = f"{max(0.0, limits.budget_usd - state.spent):.6f}"
    return out


def too_large(tokens: int, tpm: int) -> str:
    """The message of a request larger than the key's whole TPM limit."""
    requested = f"at least {tokens}" if tokens >= MAX_CEILING_TOKENS else str(tokens)
    return (f"Request too large for this key's tokens per minute (TPM): limit {tpm}, requested "
            f"{requested} (the prompt estimate plus max_tokens times n). Lower max_tokens or "
            f"shorten the prompt: retrying will not help.")


def limit_refusal(state: KeyState, limits: KeyLimits, tokens: int,
                  now: float) -> Refusal | None:
    """Why TPM (a request larger than the whole limit), parallel, RPM or TPM (in that order)
    would refuse a request of ``tokens`` now, or None. ``state`` should be ``current``."""
    def refuse(limit: Limit, message: str, retry_after_s: float | None) -> Refusal:
        return Refusal(limit, message, retry_after_s, headers(state, limits, now))

    if state.tpm is not None and not state.tpm.fits(tokens):
        return refuse("tpm", too_large(tokens, int(state.tpm.capacity)), None)
    if limits.parallel is not None and state.parallel >= limits.parallel:
        return refuse("parallel", f"This key allows {limits.parallel} requests in parallel.", 1)
    if state.rpm is not None and state.rpm.available(now) < 1:
        return refuse("rpm", f"Rate limit reached: {limits.rpm} requests per minute.",
                      state.rpm.seconds_until(1, now))
    if state.tpm is not None and not state.tpm.can_take(tokens, now):
        return refuse("tpm", f"Rate limit reached: {limits.tpm} tokens per minute (this request "
                      f"reserves {tokens}).", state.tpm.seconds_until(tokens, now))
    return None


def _refusal(state: KeyState, limits: KeyLimits, demand: Demand, now: float) -> Refusal | None:
    refused = limit_refusal(state, limits, demand.tokens, now)
    if refused is not None:
        return refused
    if limits.budget_usd is not None and state.spent + demand.worst_usd > limits.budget_usd:
        return budget_refusal(state, limits.budget_usd, limits, demand, now)
    return None


def budget_refusal(state: KeyState, budget_usd: float, limits: KeyLimits, demand: Demand,
                   now: float) -> Refusal:
    """The refusal of a request the budget cannot cover (``state`` should be ``current``)."""
    return Refusal("budget", f"This key's budget of ${budget_usd:.2f} for {state.period} "
                   f"cannot cover this request (spent ${state.spent:.4f}, this request may cost "
                   f"up to ${demand.worst_usd:.4f}).", None, headers(state, limits, now))


def reserve(state: KeyState, limits: KeyLimits, demand: Demand,
            now: float) -> tuple[KeyState, Reservation] | Refusal:
    """Check every limit, then take from every one: the new state and the reservation, or the
    refusal of the first limit that does not allow the request (nothing taken). The spend is
    that of ``state.period`` (see ``roll``)."""
    state = current(state, limits, now)
    refusal = _refusal(state, limits, demand, now)
    if refusal is not None:
        return refusal
    reservation = Reservation(state.issued, state.period, demand.worst_usd, demand.tokens,
                              demand.prompt_tokens)
    # KeyState built directly, not with dataclasses.replace: this is every request's path
    return KeyState(
        state.period, state.spent + demand.worst_usd, state.parallel + 1,
        None if state.rpm is None else state.rpm.take(1, now),
        None if state.tpm is None else state.tpm.take(demand.tokens, now),
        state.open | {reservation.number}, state.issued + 1), reservation


def settle(state: KeyState, reservation: Reservation, actual_tokens: int, actual_usd: float,
           now: float) -> KeyState:
    """The reservation replaced by the actual usage: its worst case leaves the spend and the
    actual cost enters it, the tokens not used go back to TPM, its parallel slot is freed.
    Settling a reservation that is not open returns ``state`` unchanged."""
    if reservation.number not in state.open:
        return state
    unused = max(0, reservation.tokens - actual_tokens)
    same_period = reservation.period == state.period
    return KeyState(
        state.period, state.spent + (actual_usd - reservation.usd if same_period else 0.0),
        max(0, state.parallel - 1), state.rpm,
        None if state.tpm is None else state.tpm.give_back(unused, now),
        state.open - {reservation.number}, state.issued)


def cancel(state: KeyState, reservation: Reservation, now: float) -> KeyState:
    """The reservation undone: as if the request had not been admitted (its request goes back
    to RPM, all its tokens to TPM). Cancelling one that is not open changes nothing."""
    if reservation.number not in state.open:
        return state
    state = settle(state, reservation, 0, 0.0, now)
    return replace(state, rpm=None if state.rpm is None else state.rpm.give_back(1, now))


def charged_usage(usage: Usage | None, prompt_estimate: int, chunks_seen: int,
                  status: int, called: bool) -> Usage:
    """The usage a finished request is charged for. Without the upstream's usage, a call cut
    short (chunks were relayed, or the client left once an upstream was called) is charged
    its prompt estimate and about a token per relayed chunk; otherwise nothing."""
    if usage is None and (chunks_seen or (status == 499 and called)):
        return Usage(prompt_estimate, chunks_seen)
    return usage or Usage()
