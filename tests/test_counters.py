"""The shared counters' pure rules (ailb/accounting/counters.py); the Lua mirror of them is
held to these by tests/test_redis_shared.py."""

from __future__ import annotations

from ailb.accounting import counters
from ailb.accounting.counters import Counters
from ailb.accounting.reservations import KeyLimits


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
