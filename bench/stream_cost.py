"""The marginal CPU per streamed event: each gateway's CPU per stream of 20 and of 200 events.

The slope (cpu200 - cpu20) / 180 is what one more event costs, free of the per-request cost
(accept, parse, route, upstream request) that a 20-event stream also pays. Measured in
alternating rounds like the main table (rows.py), the gateway pinned to its core, at
BENCH_STREAM_COST_CONC concurrent streams (default 16). The issue's target: <= 40 us per event
(about 500 concurrent 50-token/s streams per core).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import canned
import targets
from loadgen import LoadResult, merge, run_load
from procstat import cpu_seconds

SHORT, LONG = canned.STREAM_CONTENT_CHUNKS, canned.STREAM_LONG_CHUNKS
TARGET_US_PER_EVENT = 40.0
NAMES = ("passthrough", "ailb", "ailb-key", "portkey", "litellm")
SHAPES = {SHORT: "", LONG: "long"}


@dataclass
class StreamCost:
    target: str
    concurrency: int
    cpu_ms_short: float | None
    cpu_ms_long: float | None
    rps_short: float
    rps_long: float
    errors: int

    @property
    def us_per_event(self) -> float | None:
        if self.cpu_ms_short is None or self.cpu_ms_long is None:
            return None
        return (self.cpu_ms_long - self.cpu_ms_short) * 1000.0 / (LONG - SHORT)


def _checker(chunks: int) -> Any:
    def check(body: bytes, full: bool) -> str | None:
        return targets.validate(body, full, True, chunks)

    return check


def _run(target: targets.Target, chunks: int, conc: int, seconds: float) -> tuple[LoadResult,
                                                                                    float]:
    before = cpu_seconds(target.pid)
    res = run_load("127.0.0.1", target.port(True), target.raw_requests(True, SHAPES[chunks]),
                   concurrency=conc, duration=seconds, validate=_checker(chunks))
    return res, cpu_seconds(target.pid) - before


def measure(live: list[targets.Target], conc: int, warmup: float, seconds: float,
            rounds: int) -> list[StreamCost]:
    """Both stream lengths on every measured target, in alternating rounds."""
    chosen = [t for t in live if t.name in NAMES]
    for target in chosen:
        for chunks in SHAPES:
            _run(target, chunks, conc, warmup)
    parts: dict[tuple[str, int], list[LoadResult]] = {}
    cpu: dict[tuple[str, int], float] = {}
    for r in range(rounds):
        shift = r % len(chosen) if chosen else 0
        for target in chosen[shift:] + chosen[:shift]:
            for chunks in SHAPES:
                res, used = _run(target, chunks, conc, seconds / rounds / 2)
                parts.setdefault((target.name, chunks), []).append(res)
                cpu[(target.name, chunks)] = cpu.get((target.name, chunks), 0.0) + used
    out = []
    for target in chosen:
        s, lg = merge(parts[(target.name, SHORT)]), merge(parts[(target.name, LONG)])

        def per(res: LoadResult, chunks: int, name: str = target.name) -> float | None:
            return cpu[(name, chunks)] * 1000.0 / res.ok if res.ok else None

        out.append(StreamCost(target.name, conc, per(s, SHORT), per(lg, LONG),
                              s.ok / s.seconds if s.seconds else 0.0,
                              lg.ok / lg.seconds if lg.seconds else 0.0, s.errors + lg.errors))
    return out


COLUMNS = ("target", "conc", f"CPU ms / {SHORT}-event stream", f"CPU ms / {LONG}-event stream",
           f"µs per extra event (≤{TARGET_US_PER_EVENT:g})", f"streams/s ({SHORT})",
           f"streams/s ({LONG})", "errors")


def rows(costs: list[StreamCost]) -> list[list[str]]:
    def f(v: float | None, d: int = 3) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    out = []
    for c in costs:
        slope = c.us_per_event
        verdict = "" if slope is None else (" ok" if slope <= TARGET_US_PER_EVENT else " OVER")
        out.append([c.target, str(c.concurrency), f(c.cpu_ms_short), f(c.cpu_ms_long),
                    f(slope, 1) + verdict, f(c.rps_short, 0), f(c.rps_long, 0), str(c.errors)])
    return out


def as_json(costs: list[StreamCost]) -> list[dict[str, Any]]:
    return [{"target": c.target, "concurrency": c.concurrency, "cpu_ms_per_stream_20":
             c.cpu_ms_short, "cpu_ms_per_stream_200": c.cpu_ms_long,
             "us_per_extra_event": c.us_per_event, "streams_per_s_20": c.rps_short,
             "streams_per_s_200": c.rps_long, "errors": c.errors,
             "target_met": None if c.us_per_event is None
             else c.us_per_event <= TARGET_US_PER_EVENT} for c in costs]
