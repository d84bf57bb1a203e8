"""Failed authentications per client address, and when an address must stop trying. Pure: no
I/O, no clock; time (monotonic seconds) is passed in.

Rules, stated once:

* Each address has a token bucket of ``failures`` attempts that refills over ``window_s``
  (:mod:`ailb.limits.bucket`): a failed authentication takes one. An address with less than one
  attempt left is *throttled*: its requests whose key does not verify are refused (429), so
  a guesser gets no answer but 429, until the bucket gives one attempt back
  (``window_s / failures`` seconds). A request refused that way is not a failure: it takes
  nothing, so waiting always ends the throttle. Successful requests neither take nor give.
* While an address is throttled a key that verifies still passes (the caller decides, see
  :class:`ailb.keys.auth.ThrottledAuthenticator`): behind a proxy or NAT one client's stale key
  must not lock out everyone sharing the address, and a 190-bit secret is not guessable.
* An IPv6 address counts by its /64 network (one host usually holds the whole /64); IPv4 (and
  IPv4-mapped IPv6) addresses count alone; anything else (a Unix socket, no address) counts as
  the string it is.
* Memory is bounded: at most ``max_addresses`` are tracked. An address whose bucket is full
  again is forgotten (it is the same as one never seen); past the bound the address that
  failed least recently is forgotten first.
* ``failures`` 0 disables the throttle.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from ailb.limits.bucket import TokenBucket


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    failures: int = 20  # failed authentications an address may make in a burst; 0: no throttle
    window_s: float = 60.0  # over which its attempts come back
    max_addresses: int = 10_000  # addresses tracked at most

    @property
    def enabled(self) -> bool:
        return self.failures > 0


@dataclass(frozen=True, slots=True)
class ThrottleStatistics:
    tracked: int  # addresses with failures counted
    throttled: int  # of which throttled now


def address_key(address: str) -> str:
    """What an address counts as: an IPv6 address its /64, an IPv4 address itself."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AuthThrottle:
    """The buckets of the addresses that failed lately (least recently failed first)."""

    def __init__(self, policy: ThrottlePolicy) -> None:
        if policy.failures < 0 or policy.window_s <= 0 or policy.max_addresses < 1:
            raise ValueError(f"invalid throttle policy: {policy}")
        self.policy = policy
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def wait(self, address: str, now: float) -> float | None:
        """Seconds until ``address`` may try a key again, or None if it may now."""
        if not self.policy.enabled:
            return None
        bucket = self._buckets.get(address_key(address))
        if bucket is None or bucket.can_take(1, now):
            return None
        return max(bucket.seconds_until(1, now), 1e-3)

    def failed(self, address: str, now: float) -> bool:
        """Count one failed authentication from ``address``. True when it used the address's
        last attempt: from now on it is throttled."""
        if not self.policy.enabled:
            return False
        key = address_key(address)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            self._forget(now)
            bucket = TokenBucket.full(self.policy.failures,
                                      self.policy.failures / self.policy.window_s, now)
        # a failure takes an attempt; one made while none was left (it raced in) takes none
        taken = bucket.take(1, now)
        self._buckets[key] = taken or bucket.at(now)  # now the most recent
        return taken is not None and not taken.can_take(1, now)

    def _forget(self, now: float) -> None:
        """Room for one more address: the ones whose buckets are full again go first (oldest
        first), then, past the bound, the least recently failed."""
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if bucket.available(now) < bucket.capacity and len(self._buckets) < \
                    self.policy.max_addresses:
                return
            del self._buckets[key]

    def statistics(self, now: float) -> ThrottleStatistics:
        throttled = sum(1 for b in self._buckets.values() if not b.can_take(1, now))
        return ThrottleStatistics(len(self._buckets), throttled)
