"""Paced-stream capacity: how many concurrent streams, 20 ms between events, one core relays.

For each gateway (pinned to its core, as in the main table) the number of concurrent streams is
stepped up (10, 25, 50, 100, ...). Each stream is the 20-event stream the upstream sends
``canned.PACED_GAP_MS`` apart (upstream.py, ``/paced``). The client stamps every read of a
stream's body and keeps the gaps between consecutive reads (the first 0.5 s of a step, while
the connections open, is left out). A step passes when the p99 gap minus 20 ms stays under
5 ms, nothing failed, and the streams completed are at least 80 % of what that many
connections complete at the upstream's own pace (a gateway that queued streams behind a
connection pool would otherwise pass with few streams really in flight). The
capacity is the largest passing step; stepping stops at the first failure. The requests ask for
the usage chunk (``stream_options.include_usage``): a gateway that drops it (AILB does when not
asked) would show a 40 ms gap before ``[DONE]`` at any load. ``direct`` (nginx
alone) shows the load generator's own ceiling. Bounded: BENCH_CAPACITY_BUDGET seconds in all
(default 60, shared among the targets), BENCH_CAPACITY_STEP seconds per step (default 2.5),
BENCH_CAPACITY_MAX streams (default 1600), BENCH_CAPACITY_TARGETS which targets.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

import canned
import targets
from httpwire import ResponseParser
from procstat import cpu_seconds, self_cpu_seconds

GAP_MS = canned.PACED_GAP_MS
ADDED_P99_LIMIT_MS = 5.0
MIN_PACE = 0.8  # completed streams / what the connections would complete at the upstream's pace
# One paced stream: the content events, the usage event and [DONE], GAP_MS apart.
STREAM_S = (canned.STREAM_CONTENT_CHUNKS + 1) * GAP_MS / 1000
# Measured in this order; direct last, on what is left of the budget. BENCH_CAPACITY_TARGETS
# overrides (any live target, e.g. "ailb" to compare the admin key).
NAMES = ("passthrough", "ailb-key", "portkey", "litellm", "direct")
WARM_S = 0.5


@dataclass
class Step:
    target: str
    streams: int
    completed: int
    errors: int
    gap_p50_ms: float | None
    gap_p99_ms: float | None
    ttfb_p99_ms: float | None
    cpu_pct: float
    loadgen_cpu_pct: float
    seconds: float

    @property
    def pace(self) -> float:
        """Completed streams over those the connections complete at the upstream's pace."""
        return self.completed / (self.streams * self.seconds / STREAM_S)

    @property
    def added_p99_ms(self) -> float | None:
        return None if self.gap_p99_ms is None else self.gap_p99_ms - GAP_MS

    @property
    def ok(self) -> bool:
        return (self.errors == 0 and self.pace >= MIN_PACE and self.added_p99_ms is not None
                and self.added_p99_ms < ADDED_P99_LIMIT_MS)


class _Stats:
    def __init__(self, since: float) -> None:
        self.since = since
        self.gaps: list[float] = []
        self.ttfbs: list[float] = []
        self.completed = 0
        self.errors = 0


class _Client(asyncio.Protocol):
    def __init__(self, request: bytes, deadline: float, stats: _Stats) -> None:
        self.request, self.deadline, self.stats = request, deadline, stats
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.sent = self.last = 0.0
        self.busy = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.parser.reset(keep_body=False)
        self.sent, self.last, self.busy = time.perf_counter(), 0.0, True
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        p = self.parser
        try:
            done = p.feed(data)
        except ValueError:
            done, p.close = True, True
            self.stats.errors += 1
        if now >= self.stats.since:
            if self.last:
                self.stats.gaps.append(now - self.last)
            elif p.first_body_at:
                self.stats.ttfbs.append(p.first_body_at - self.sent)
        if p.first_body_at:
            self.last = now
        if not done:
            return
        self.busy = False
        if targets.validate(p.body_bytes(), False, True) is None and not p.problem():
            self.stats.completed += 1
        else:
            self.stats.errors += 1
        assert self.transport is not None
        if p.close or now >= self.deadline:
            self.transport.close()
        else:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.stats.errors += 1
        if not self.closed.done():
            self.closed.set_result(None)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000.0


async def _step(port: int, request: bytes, streams: int, seconds: float) -> _Stats:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    stats = _Stats(start + WARM_S)
    clients: list[_Client] = []
    for i in range(streams):  # spread over one gap, so that the streams' events interleave
        await asyncio.sleep(max(0.0, start + i * GAP_MS / 1000 / streams - time.perf_counter()))
        try:
            _, client = await loop.create_connection(
                lambda: _Client(request, start + seconds, stats), "127.0.0.1", port)
            clients.append(client)
        except OSError:
            stats.errors += 1
    try:
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients)), seconds + 30)
    except TimeoutError:
        stats.errors += 1
        for c in clients:
            if c.transport is not None:
                c.transport.abort()
    return stats


def _request(target: targets.Target) -> bytes:
    raw = target.raw_request(True, 0, "paced")
    if target.name == "direct":  # nginx itself: the paced location's own path
        raw = raw.replace(b"POST /v1/", b"POST /paced/v1/", 1)
    return raw


def _run_step(target: targets.Target, streams: int, seconds: float) -> Step:
    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    gw0, lg0, t0 = cpu_seconds(target.pid), self_cpu_seconds(), time.perf_counter()
    stats = runner(_step(target.port(True), _request(target), streams, seconds))
    wall = time.perf_counter() - t0
    return Step(target.name, streams, stats.completed, stats.errors, _pct(stats.gaps, 0.5),
                _pct(stats.gaps, 0.99), _pct(stats.ttfbs, 0.99),
                100.0 * (cpu_seconds(target.pid) - gw0) / wall,
                100.0 * (self_cpu_seconds() - lg0) / wall, seconds)


Found = dict[str, int | None]


def measure(live: list[targets.Target]) -> tuple[Found, list[Step], list[str]]:
    """({target: capacity in streams, None when even the first step failed}, every step,
    notes)."""
    budget = float(os.environ.get("BENCH_CAPACITY_BUDGET", 60))
    step_s = float(os.environ.get("BENCH_CAPACITY_STEP", 2.5))
    top = int(os.environ.get("BENCH_CAPACITY_MAX", 1600))
    levels = [n for n in (10, 25, 50, 100, 200, 400, 800, 1600, 3200) if n <= top]
    names = os.environ.get("BENCH_CAPACITY_TARGETS", ",".join(NAMES)).split(",")
    by_name = {t.name: t for t in live}
    chosen = [by_name[n] for n in names if n in by_name]
    found: Found = {}
    steps: list[Step] = []
    notes: list[str] = []
    started = time.monotonic()
    for i, target in enumerate(chosen):
        share = (budget - (time.monotonic() - started)) / (len(chosen) - i)
        until = time.monotonic() + share
        best: int | None = None
        for n in levels:
            if time.monotonic() + step_s + 1 > until:
                notes.append(f"capacity of {target.name}: time budget reached after {best} "
                             "streams (raise BENCH_CAPACITY_BUDGET)")
                break
            step = _run_step(target, n, step_s)
            steps.append(step)
            print("  capacity " + "  ".join(f"{h}={v}" for h, v in zip(
                COLUMNS, rows([step])[0], strict=True)), flush=True)
            if not step.ok:
                break
            best = n
        else:
            notes.append(f"capacity of {target.name}: every step passed, up to {best}")
        found[target.name] = best
    return found, steps, notes


COLUMNS = ("target", "streams", "completed", f"of paced (≥{MIN_PACE:g})", "errors",
           "gap p50 ms", "gap p99 ms", f"added p99 ms (<{ADDED_P99_LIMIT_MS:g})",
           "TTFB p99 ms", "gateway CPU %",
           "LG CPU %", "pass")


def rows(steps: list[Step]) -> list[list[str]]:
    def f(v: float | None, d: int = 2) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    return [[s.target, str(s.streams), str(s.completed), f(s.pace), str(s.errors),
             f(s.gap_p50_ms), f(s.gap_p99_ms), f(s.added_p99_ms), f(s.ttfb_p99_ms),
             f(s.cpu_pct, 0), f(s.loadgen_cpu_pct, 0), "yes" if s.ok else "NO"] for s in steps]


def summary(found: Found) -> str:
    return "; ".join(f"{name}: {'< 10' if n is None else n} streams" for name, n in found.items())


def as_json(found: Found, steps: list[Step]) -> dict[str, Any]:
    return {"capacity_streams": found, "gap_ms": GAP_MS,
            "steps": [asdict(s) | {"added_p99_ms": s.added_p99_ms, "pace": s.pace, "ok": s.ok}
                      for s in steps]}
