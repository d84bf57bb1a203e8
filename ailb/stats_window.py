"""Request totals and latency percentiles since a point in time: fed by the same call that
feeds the Prometheus metrics (``request_log.finish``), read and reset by the gRPC stats RPCs."""

from __future__ import annotations

import math
import resource
import time
from collections import deque


class StatsWindow:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A new window: counters at zero, ``since`` now (Prometheus counters are untouched)."""
        self.since = time.time()
        self._cpu_since = time.process_time()
        self.total = 0
        self.succeeded = 0
        self.failed = 0
        self._latencies: deque[float] = deque(maxlen=4096)
        self._latency_sum = 0.0

    def record(self, status: int, seconds: float) -> None:
        self.total += 1
        if status < 400:
            self.succeeded += 1
        else:
            self.failed += 1
        self._latencies.append(seconds)
        self._latency_sum += seconds

    def cpu_percent(self) -> float:
        """The process's CPU time over the window's wall time, in percent of one core."""
        wall = time.time() - self.since
        return 100.0 * (time.process_time() - self._cpu_since) / wall if wall > 0 else 0.0

    @staticmethod
    def memory_mb() -> float:
        """Peak resident memory of the process (Linux reports kilobytes)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def average_s(self) -> float:
        return self._latency_sum / self.total if self.total else 0.0

    def percentile_s(self, fraction: float) -> float:
        if not self._latencies:
            return 0.0
        ordered = sorted(self._latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]
