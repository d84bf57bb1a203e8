"""The shared counters' pure rules (ailb/accounting/counters.py); the Lua mirror of them is
held to these by tests/test_redis_shared.py."""

from __future__ import annotations

from ailb.accounting import counters
from ailb.accounting.counters import Counters
from ailb.accounting.reservations import KeyLimits, Refusal


def test_a_release_keeps_the_request_taken_and_a_cancel_gives_it_back() -> None:
    limits = KeyLimits(rpm=2, tpm=100)
    taken = counters.take(Counters(), limits, 40, "a", 0.0, 60.0)
    assert isinstance(taken, Counters) and taken.rpm is not None
    released = counters.release(taken, "a", 10, cancel=False, now=0.0)
    assert released.rpm == taken.rpm  # RPM counts the request: it stays taken
    assert released.tpm is not None and released.tpm.tokens == 70
    cancelled = counters.release(taken, "a", 40, cancel=True, now=0.0)
    assert cancelled.rpm is not None and cancelled.rpm.tokens == 2
    assert cancelled.tpm is not None and cancelled.tpm.tokens == 100


def test_a_take_larger_than_the_whole_tpm_is_refused_first_and_for_good() -> None:
    limits = KeyLimits(tpm=100, parallel=1)
    taken = counters.take(Counters(), limits, 100, "a", 0.0, 60.0)  # the whole bucket: fine
    assert isinstance(taken, Counters) and taken.tpm is not None and taken.tpm.tokens == 0
    # the parallel slot is taken too, but "too large" comes first: waiting cannot help
    refused = counters.take(taken, limits, 101, "b", 3600.0, 60.0)
    assert isinstance(refused, Refusal) and refused.limit == "tpm"
    assert refused.retry_after_s is None and "limit 100, requested 101 " in refused.message
    waits = counters.take(taken, limits, 50, "b", 10.0, 60.0)
    assert isinstance(waits, Refusal) and waits.limit == "parallel"
