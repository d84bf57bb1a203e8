"""Health of each deployment: probe tasks write it, routing and ``/healthz`` read it.

One probe task per deployment runs for the life of the process (the supervisor owns them): a cheap
request every ``interval_s`` +- ``jitter``, bounded by ``timeout_s``. A deployment starts
``unknown`` and is routable until a probe says otherwise, so the first requests after start-up do
not wait for the first probe round.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import trio

from ailb import logs
from ailb.config.schema import HealthSettings
from ailb.metrics import Metrics
from ailb.providers.base import ProbeResult, Provider

State = Literal["unknown", "up", "down"]
_log = logging.getLogger("ailb.health")


@dataclass(frozen=True, slots=True)
class HealthRecord:
    state: State = "unknown"
    checked_at: float | None = None  # wall clock, for humans
    latency_s: float | None = None
    detail: str = ""
    consecutive_failures: int = 0
    ok_at: float | None = None  # Trio clock of the last successful probe


class HealthBoard:
    """The latest health record of every deployment, and the models some of them discovered."""

    def __init__(self, deployments: list[str]) -> None:
        self._records = {name: HealthRecord() for name in deployments}
        self._discovered: dict[str, tuple[str, ...]] = {}
        self._wake = {name: trio.Event() for name in deployments}

    def record(self, name: str, result: ProbeResult, now: float,
               down_after: int = 1) -> HealthRecord:
        """Store a probe result. A deployment goes down only after ``down_after`` failures in a
        row (one slow probe must not take a lone deployment out); one success brings it up."""
        previous = self._records.get(name, HealthRecord())
        failures = 0 if result.ok else previous.consecutive_failures + 1
        if result.ok:
            state: State = "up"
        elif failures >= down_after:
            state = "down"
        else:
            state = previous.state
        record = HealthRecord(state, now, result.latency_s, result.detail, failures,
                              trio.current_time() if result.ok else previous.ok_at)
        if name in self._records:  # a deployment removed by a reload is no longer tracked
            self._records[name] = record
        if result.models is not None and self._discovered.get(name) != result.models:
            # replaced, never mutated: readers may keep (and cache by) the mapping they got
            self._discovered = {**self._discovered, name: result.models}
        return record

    def sync(self, names: list[str]) -> None:
        """Track exactly ``names`` (after a reload): new ones start unknown."""
        self._records = {name: self._records.get(name, HealthRecord()) for name in names}
        self._wake = {name: self._wake.get(name, trio.Event()) for name in names}
        if set(self._discovered) - set(names):
            self._discovered = {k: v for k, v in self._discovered.items() if k in names}

    def last_ok(self, name: str) -> float | None:
        record = self._records.get(name)
        return None if record is None else record.ok_at

    def request_probe(self, name: str) -> None:
        """Probe ``name`` now rather than at its next period (after a cooldown)."""
        event = self._wake.get(name)
        if event is not None:  # a deployment a reload removed has nothing to probe
            event.set()

    async def wait_probe_request(self, name: str) -> None:
        await self._wake[name].wait()
        self._wake[name] = trio.Event()

    def routable(self, name: str) -> bool:
        record = self._records.get(name)
        return record is not None and record.state != "down"

    def any_up(self) -> bool:
        return any(r.state == "up" for r in self._records.values())

    def snapshot(self) -> dict[str, HealthRecord]:
        return dict(self._records)

    def discovered(self) -> Mapping[str, tuple[str, ...]]:
        """Models discovered per deployment; a new mapping object whenever they change."""
        return self._discovered


async def probe_forever(
    provider: Provider,
    board: HealthBoard,
    settings: HealthSettings,
    metrics: Metrics,
    rng: random.Random,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Probe one deployment until cancelled. Reports started after the first probe."""
    dep = provider.deployment
    gauge = metrics.provider_up.labels(deployment=dep.name, provider=dep.type)
    started = False
    while True:
        result: ProbeResult | None = None
        with trio.move_on_after(settings.timeout_s):
            try:
                result = await provider.probe()
            except Exception as exc:  # a probe must never take the process down with it
                logs.event(_log, "health probe failed unexpectedly", logging.WARNING,
                           deployment=dep.name, error=type(exc).__name__)
                result = ProbeResult(False, 0.0, type(exc).__name__)
        if result is None:
            result = ProbeResult(False, settings.timeout_s, "timed out")
        record = board.record(dep.name, result, time.time(), settings.down_after)
        gauge.set(1 if record.state == "up" else 0)
        if not started:
            task_status.started()
            started = True
        spread = settings.interval_s * settings.jitter
        with trio.move_on_after(max(0.01, settings.interval_s + rng.uniform(-spread, spread))):
            await board.wait_probe_request(dep.name)
