"""A key's rate-limit counters when several gateways share them (worker processes of one
instance, or instances on several machines): RPM and TPM buckets and the open parallel leases.
Pure: no I/O, no clock; time (wall-clock seconds, the same for every gateway that shares the
counters) is passed in.

One gateway alone keeps these counters in memory (:mod:`ailb.accounting.gate`, exact because
Trio runs one task at a time between awaits). Shared, they live where every gateway reaches them
(the store or Redis/Valkey), and each take is one atomic step there: read the counters, apply
:func:`take`, write them back, with no other writer in between (a transaction holding the row, or
a Lua script). Stores that can run Python inside that step use these functions; the Lua of the
Redis edge is their mirror, and a property test holds the two to the same answers.

Rules, stated once:

* The buckets are the gate's own (:mod:`ailb.limits.bucket`, a minute's burst); a take reserves
  one request and ``tokens`` tokens; a limit that changed gets a full bucket. The refusals and
  their order are the gate's too (:func:`ailb.accounting.reservations.limit_refusal`): more
  tokens than the whole TPM limit first (for good), then parallel, RPM, TPM.
* Parallel slots are *leases* with an expiry: a gateway killed mid-call cannot give its slots
  back, so a lease ends by itself ``lease_s`` after it was taken (the longest a call may last).
  Spend is not leased: the budget's write-ahead reservation stays charged (see the store).
* Releasing gives back the tokens the call did not use and frees the slot; cancelling (the
  request was refused after the take, e.g. by the budget) gives back the request too. Releasing
  an unknown or expired lease changes nothing, so a release retried is harmless.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ailb.accounting import reservations as rules
from ailb.accounting.reservations import KeyLimits, KeyState, Refusal
from ailb.limits.bucket import TokenBucket


@dataclass(frozen=True, slots=True)
class Counters:
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    leases: Mapping[str, float] = field(default_factory=dict)  # lease id -> ends at (wall s)


@dataclass(frozen=True, slots=True)
class Taken:
    """A take that succeeded: its lease, and the counters right after it (for the headers)."""

    lease: str
    counters: Counters


def current(counters: Counters, limits: KeyLimits, now: float) -> Counters:
    """Buckets that match ``limits``, refilled up to ``now``; leases that ended dropped."""
    state = rules.current(KeyState(rpm=counters.rpm, tpm=counters.tpm), limits, now)
    return Counters(state.rpm, state.tpm,
                    {lease: end for lease, end in counters.leases.items() if end > now})


def as_state(counters: Counters) -> KeyState:
    """The counters as the gate's state (spend not included), for refusals and headers."""
    return KeyState(parallel=len(counters.leases), rpm=counters.rpm, tpm=counters.tpm)


def refusal(counters: Counters, limits: KeyLimits, tokens: int, now: float) -> Refusal | None:
    """Why a take of ``tokens`` would be refused now (larger than the TPM limit, parallel,
    RPM, then TPM), or None. ``counters`` should be ``current``."""
    return rules.limit_refusal(as_state(counters), limits, tokens, now)


def take(counters: Counters, limits: KeyLimits, tokens: int, lease: str, now: float,
         lease_s: float) -> Counters | Refusal:
    """One request and ``tokens`` tokens taken, and a parallel lease that ends at
    ``now + lease_s``; or the refusal of the first limit that does not allow it (nothing
    taken)."""
    counters = current(counters, limits, now)
    refused = refusal(counters, limits, tokens, now)
    if refused is not None:
        return refused
    return Counters(
        None if counters.rpm is None else counters.rpm.take(1, now),
        None if counters.tpm is None else counters.tpm.take(tokens, now),
        {**counters.leases, lease: now + lease_s})


def release(counters: Counters, lease: str, unused_tokens: int, cancel: bool,
            now: float) -> Counters:
    """The lease ended: ``unused_tokens`` back to TPM (the request back to RPM too when
    ``cancel``). An unknown lease (released already, or ended) changes nothing."""
    if lease not in counters.leases:
        return counters
    leases = {k: v for k, v in counters.leases.items() if k != lease}
    return replace(
        counters, leases=leases,
        tpm=None if counters.tpm is None else counters.tpm.give_back(unused_tokens, now),
        rpm=counters.rpm if counters.rpm is None or not cancel
        else counters.rpm.give_back(1, now))


# -- as stored: one JSON text per key ----------------------------------------------------------
def _bucket_out(bucket: TokenBucket | None) -> list[float] | None:
    return None if bucket is None else [bucket.capacity, bucket.rate, bucket.tokens,
                                        bucket.updated]


def _bucket_in(value: Any) -> TokenBucket | None:
    return None if value is None else TokenBucket(*(float(v) for v in value))


def dumps(counters: Counters) -> str:
    return json.dumps({"rpm": _bucket_out(counters.rpm), "tpm": _bucket_out(counters.tpm),
                       "leases": dict(counters.leases)}, separators=(",", ":"))


def loads(text: str | None) -> Counters:
    """The counters stored as ``text`` (None: a key never seen, no counters yet)."""
    if not text:
        return Counters()
    raw = json.loads(text)
    return Counters(_bucket_in(raw.get("rpm")), _bucket_in(raw.get("tpm")),
                    {str(k): float(v) for k, v in raw.get("leases", {}).items()})


def apply_take(text: str | None, limits: KeyLimits, tokens: int, lease: str, now: float,
               lease_s: float) -> tuple[str | None, Taken | Refusal]:
    """For a store that holds the counters as text: the text to write back (None: unchanged)
    and the outcome."""
    outcome = take(loads(text), limits, tokens, lease, now, lease_s)
    if isinstance(outcome, Refusal):
        return None, outcome
    return dumps(outcome), Taken(lease, outcome)


def apply_release(text: str | None, lease: str, unused_tokens: int, cancel: bool,
                  now: float) -> str | None:
    """For a store that holds the counters as text: the text to write back (None:
    unchanged)."""
    counters = loads(text)
    if lease not in counters.leases:
        return None
    return dumps(release(counters, lease, unused_tokens, cancel, now))


class SharedCounters(Protocol):
    """Where the counters of every key live when several gateways share them. Each call is one
    atomic step there; every call may raise ``StoreUnavailable``."""

    async def take(self, key_id: str, limits: KeyLimits, tokens: int, lease: str,
                   lease_s: float) -> Taken | Refusal:
        """:func:`take` on the key's shared counters, at the shared clock's time."""
        ...

    async def release(self, key_id: str, lease: str, unused_tokens: int,
                      cancel: bool) -> None:
        """:func:`release` on the key's shared counters."""
        ...
