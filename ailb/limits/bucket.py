"""A token bucket as an immutable value, with time passed in. Pure: no clock is read here.

``capacity`` tokens at most; ``rate`` tokens come back per second. Every operation returns a new
bucket; the holder swaps it in with one assignment. ``take`` returns None unless enough tokens
are there now, so a check and its take are one step: limits hold exactly under concurrency when
the holder does not await between reading the bucket and storing the new one (Trio runs one task
at a time between awaits). An amount larger than ``capacity`` is never taken, however full the
bucket (:meth:`TokenBucket.fits` tells it apart from one that must wait): the holder refuses it
for good rather than let one request take more than the whole bucket.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenBucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float  # at ``updated``; from 0 to ``capacity``
    updated: float

    @classmethod
    def full(cls, capacity: float, per_second: float, now: float) -> TokenBucket:
        return cls(capacity, per_second, capacity, now)

    @classmethod
    def per_minute(cls, limit: float, now: float) -> TokenBucket:
        """``limit`` per minute, with a burst of the whole minute's allowance."""
        return cls.full(limit, limit / 60.0, now)

    def at(self, now: float) -> TokenBucket:
        """The bucket refilled up to ``now`` (a time before the last update changes nothing)."""
        if now <= self.updated:
            return self
        # built directly, not with dataclasses.replace: it is on every request's path
        return TokenBucket(self.capacity, self.rate,
                           min(self.capacity, self.tokens + (now - self.updated) * self.rate),
                           now)

    def available(self, now: float) -> float:
        return self.at(now).tokens

    def fits(self, amount: float) -> bool:
        """Whether ``amount`` can ever be taken: no more than the whole bucket."""
        return amount <= self.capacity

    def can_take(self, amount: float, now: float) -> bool:
        """Whether ``take`` would succeed: ``amount`` tokens are there now (so never more than
        the whole bucket)."""
        return self.available(now) >= amount

    def take(self, amount: float, now: float) -> TokenBucket | None:
        """The bucket with ``amount`` tokens taken, or None if they are not there (see
        ``can_take``)."""
        bucket = self.at(now)
        if bucket.tokens < amount:  # ``can_take``, on the bucket refilled once
            return None
        return TokenBucket(bucket.capacity, bucket.rate, bucket.tokens - amount, bucket.updated)

    def give_back(self, amount: float, now: float) -> TokenBucket:
        """Tokens reserved in excess returned (never above ``capacity``)."""
        bucket = self.at(now)
        return TokenBucket(bucket.capacity, bucket.rate,
                           min(self.capacity, bucket.tokens + max(0.0, amount)), bucket.updated)

    def seconds_until(self, amount: float, now: float) -> float:
        """How long until ``amount`` tokens are there (0 if they are now; an amount that does
        not fit counts as the whole bucket)."""
        missing = min(amount, self.capacity) - self.available(now)
        return 0.0 if missing <= 0 or self.rate <= 0 else missing / self.rate
