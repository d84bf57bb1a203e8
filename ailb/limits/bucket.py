"""A token bucket with time passed in. Pure: no clock is read here.

``capacity`` tokens at most; ``rate`` tokens come back per second. ``take`` succeeds only if
enough tokens are there now, so limits hold exactly under concurrency (Trio runs one task at a
time between awaits, and ``take`` does not await).
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_tokens", "_updated", "capacity", "rate")

    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        self.capacity = capacity
        self.rate = per_second
        self._tokens = capacity
        self._updated = now

    @classmethod
    def per_minute(cls, limit: float, now: float) -> TokenBucket:
        """``limit`` per minute, with a burst of the whole minute's allowance."""
        return cls(limit, limit / 60.0, now)

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if they are there. A request larger than the whole bucket is
        allowed when the bucket is full, so it is not refused forever."""
        self._refill(now)
        if self._tokens >= amount or (self._tokens >= self.capacity and amount > self.capacity):
            self._tokens -= amount
            return True
        return False

    def give_back(self, amount: float, now: float) -> None:
        """Return tokens reserved in excess (actual usage was lower than the estimate)."""
        self._refill(now)
        self._tokens = min(self.capacity, self._tokens + amount)

    def seconds_until(self, amount: float, now: float) -> float:
        """How long until ``amount`` tokens are there (0 if they are now)."""
        self._refill(now)
        missing = min(amount, self.capacity) - self._tokens
        return 0.0 if missing <= 0 or self.rate <= 0 else missing / self.rate
