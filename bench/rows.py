"""One row of the table (a scenario at one concurrency), measured on every live target.

The measured time is cut into rounds, and each round visits the targets in turn (starting with a
different one each time), so that a change in background load hits all targets alike. A target
that defers work past its answers (``Target.drain``: AILB's memory writer) is waited for after
each of its slices, until its process is idle, and that CPU is counted as its own. The CPU of
the servers a target keeps its state in (``Target.backend_pids``) is counted apart, as backend
CPU, and not as other processes' load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import report
import targets
from loadgen import LoadResult, Validator, merge, run_load
from procstat import cpu_seconds, peak_rss, self_cpu_seconds, system_busy_seconds, wait_idle
from upstream import Upstream


@dataclass
class _Tally:
    parts: list[LoadResult] = field(default_factory=list)
    gateway_cpu: float = 0.0
    loadgen_cpu: float = 0.0
    other_cpu: float = 0.0
    backend_cpu: float = 0.0
    new_upstream_conns: int | None = 0


def _slice(target: targets.Target, stream: bool, conc: int, seconds: float, up: Upstream,
           tally: _Tally) -> None:
    requests = target.raw_requests(stream)
    pids = {target.pid, up.main_pid, *target.backend_pids}
    accepted = up.accepted()
    before = (cpu_seconds(target.pid), self_cpu_seconds(), sum(map(cpu_seconds, pids)),
              system_busy_seconds(), sum(map(cpu_seconds, target.backend_pids)))
    res = run_load("127.0.0.1", target.port(stream), requests, concurrency=conc,
                   duration=seconds, validate=_checker(stream))
    if target.drain:
        wait_idle(target.pid)
    after = (cpu_seconds(target.pid), self_cpu_seconds(), sum(map(cpu_seconds, pids)),
             system_busy_seconds(), sum(map(cpu_seconds, target.backend_pids)))
    accepted_after = up.accepted()
    gw, lg, ours, busy, backend = (a - b for a, b in zip(after, before, strict=True))
    tally.parts.append(res)
    tally.gateway_cpu += gw
    tally.loadgen_cpu += lg
    tally.other_cpu += busy - ours - lg
    tally.backend_cpu += backend
    if accepted is None or accepted_after is None or tally.new_upstream_conns is None:
        tally.new_upstream_conns = None
    else:  # minus one: the first status query's own connection
        tally.new_upstream_conns += accepted_after - accepted - 1


def _checker(stream: bool) -> Validator:
    def check(body: bytes, full: bool) -> str | None:
        return targets.validate(body, full, stream)

    return check


def measure_row(live: list[targets.Target], stream: bool, conc: int, warmup: float,
                seconds: float, rounds: int, up: Upstream
                ) -> tuple[list[report.Measurement], dict[str, str]]:
    """Measurements of the targets that answered, and {target name: why} for those that failed."""
    failed: dict[str, str] = {}
    ok: list[targets.Target] = []
    for target in live:
        warm = run_load("127.0.0.1", target.port(stream), target.raw_requests(stream),
                        concurrency=conc, duration=warmup, validate=_checker(stream))
        if target.drain:
            wait_idle(target.pid)
        if warm.ok == 0:
            failed[target.name] = f"no good answer during warm-up: {warm.error_samples}"
        else:
            ok.append(target)
    tallies = {t.name: _Tally() for t in ok}
    for r in range(rounds):
        shift = r % len(ok) if ok else 0
        for target in ok[shift:] + ok[:shift]:
            _slice(target, stream, conc, seconds / rounds, up, tallies[target.name])
    out: list[report.Measurement] = []
    for target in ok:
        tally = tallies[target.name]
        res = merge(tally.parts)
        m = report.Measurement.build(target.name, stream, res, tally.gateway_cpu,
                                     peak_rss(target.pid).tree_peak_rss_kib, tally.loadgen_cpu,
                                     tally.other_cpu)
        if target.backend_pids and res.ok:
            m.backend_cpu_ms_per_req = tally.backend_cpu * 1000.0 / res.ok
        if target.name != "direct" and tally.new_upstream_conns is not None:
            m.upstream_conns_per_req = tally.new_upstream_conns / max(1, res.ok + res.errors)
        out.append(m)
    return out, failed

