"""What routing knows about each deployment from live traffic: counters, latency, failures,
cooldowns and the deployment's own rate caps. Time is passed in (Trio's clock in production).

Cooldown rules, stated once:

* a failure that says the deployment is unwell (connect error, timeout, 5xx, broken stream)
  is counted; ``failures_to_cooldown`` of them within ``failure_window_s`` cool it down for
  ``cooldown_s``, and afterwards it gets traffic again only once a health probe succeeded;
* a 429 with ``Retry-After`` cools it down for exactly that long (a 429 without one: for
  ``cooldown_s``); no probe is needed afterwards, the upstream said when to come back;
* a success clears the failure count.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

from ailb.config.schema import RoutingSettings
from ailb.limits.bucket import TokenBucket

Availability = Literal["ok", "cooling", "probing", "capped"]


class DeploymentStats:
    def __init__(self, name: str, rpm: int | None, tpm: int | None, now: float) -> None:
        self.name = name
        self.requests = 0
        self.successes = 0
        self.failures = 0
        self.in_flight = 0
        self.ewma_s: float | None = None
        self._ewma_at = now
        self.samples: deque[float] = deque(maxlen=512)
        self._failure_times: deque[float] = deque()
        self.cooldown_until = 0.0
        self.cooldown_reason = ""
        self.needs_probe = False
        self.rpm = None if rpm is None else TokenBucket.per_minute(rpm, now)
        self.tpm = None if tpm is None else TokenBucket.per_minute(tpm, now)

    # -- latency ------------------------------------------------------------------------------
    def observe_latency(self, seconds: float, now: float, decay_s: float) -> None:
        """Peak-EWMA: a slower sample counts at once, faster ones pull the average down with
        a time constant of ``decay_s`` (so a recovered deployment's score improves)."""
        self.samples.append(seconds)
        if self.ewma_s is None or seconds > self.ewma_s:
            self.ewma_s = seconds
        else:
            weight = math.exp(-max(0.0, now - self._ewma_at) / decay_s)
            # at least a small step even for back-to-back samples
            weight = min(weight, 0.9)
            self.ewma_s = self.ewma_s * weight + seconds * (1 - weight)
        self._ewma_at = now

    def percentile(self, fraction: float) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
        return ordered[index]

    # -- outcomes -----------------------------------------------------------------------------
    def record_success(self) -> None:
        self.successes += 1
        self._failure_times.clear()

    def record_failure(self, now: float, policy: RoutingSettings) -> bool:
        """Count a failure; True when it started a cooldown."""
        self.failures += 1
        self._failure_times.append(now)
        while self._failure_times and now - self._failure_times[0] > policy.failure_window_s:
            self._failure_times.popleft()
        if len(self._failure_times) >= policy.failures_to_cooldown and not self.cooling(now):
            self.cool_down(policy.cooldown_s, now, "failures", needs_probe=True)
            return True
        return False

    def cool_down(self, seconds: float, now: float, reason: str, *, needs_probe: bool) -> None:
        self.cooldown_until = max(self.cooldown_until, now + seconds)
        self.cooldown_reason = reason
        self.needs_probe = self.needs_probe or needs_probe
        self._failure_times.clear()

    def cooling(self, now: float) -> bool:
        return now < self.cooldown_until

    def availability(self, now: float, last_probe_ok_at: float | None,
                     prompt_tokens: int) -> Availability:
        if self.cooling(now):
            return "cooling"
        if self.needs_probe:
            if last_probe_ok_at is None or last_probe_ok_at < self.cooldown_until:
                return "probing"
            self.needs_probe = False
        if self.rpm is not None and self.rpm.available(now) < 1:
            return "capped"
        if self.tpm is not None and self.tpm.available(now) < min(prompt_tokens,
                                                                  self.tpm.capacity):
            return "capped"
        return "ok"

    def seconds_until_capacity(self, tokens: int, now: float) -> float:
        waits = [0.0]
        if self.rpm is not None:
            waits.append(self.rpm.seconds_until(1, now))
        if self.tpm is not None:
            waits.append(self.tpm.seconds_until(min(tokens, self.tpm.capacity), now))
        return max(waits)

    def take_capacity(self, prompt_tokens: int, now: float) -> None:
        """Count one request (and its estimated tokens) against the deployment's caps (a cap
        without them left is not taken from; a request larger than the whole TPM cap counts as
        all of it)."""
        if self.rpm is not None:
            self.rpm = self.rpm.take(1, now) or self.rpm
        if self.tpm is not None:
            self.tpm = self.tpm.take(min(prompt_tokens, self.tpm.capacity), now) or self.tpm
