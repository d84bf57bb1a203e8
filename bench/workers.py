"""``ailb --workers 1`` vs ``--workers 2`` at the same load: what a second worker process buys.

Both instances run unpinned (every CPU of the machine, as in production), as does the load
generator; the upstream is the same nginx. The measured time is cut into rounds that alternate
between the two (each round starting with the other one), so that background noise hits both
alike. Reported: requests/s of each and their ratio, for JSON requests at BENCH_CONCURRENCY's
highest value (a single connection cannot use two workers). On a 2-core machine the load
generator and nginx take part of the second core, so the ratio stays below 2.

``bench/run.py`` runs it after the main table (``BENCH_WORKERS=0`` skips it); alone:
``.venv/bin/python bench/workers.py``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import targets
from loadgen import LoadResult, merge, run_load
from procs import spawn, wait_http_ok
from upstream import Upstream, start_upstream


def _start(up: Upstream, workers: int, tmp: Path, logs: Path) -> targets.Target:
    name = f"ailb-workers{workers}"
    port = targets.free_port()
    config = tmp / f"{name}.yaml"
    config.write_text(targets.ailb_config(up, port, tmp / f"{name}-data"))
    argv = [sys.executable, "-m", "ailb", "--config", str(config), "--workers", str(workers)]
    child = spawn(name, argv, core=None, log_path=logs / f"{name}.log", env=targets.ailb_env(),
                  cwd=targets.AILB_SRC)
    target = targets.Target(name, f"AILB, {workers} worker(s)", port, port, child.pid,
                            auth=targets.ADMIN_KEY, child=child)
    try:
        wait_http_ok(child, port, "/readyz", timeout=90)
    except BaseException:
        target.close()
        raise
    return target


def _check(body: bytes, full: bool) -> str | None:
    return targets.validate(body, full, False)


def compare(up: Upstream, tmp: Path, logs: Path, concurrency: int, seconds: float,
            warmup: float, rounds: int) -> dict[str, Any]:
    """Requests/s of 1 and 2 workers and their ratio. Raises BenchError."""
    live = [_start(up, 1, tmp, logs)]
    try:
        live.append(_start(up, 2, tmp, logs))
        parts: dict[str, list[LoadResult]] = {t.name: [] for t in live}
        for target in live:
            run_load("127.0.0.1", target.port(False), target.raw_requests(False),
                     concurrency=concurrency, duration=warmup, validate=_check)
        for turn in range(rounds):
            for target in live[turn % 2:] + live[:turn % 2]:
                parts[target.name].append(run_load(
                    "127.0.0.1", target.port(False), target.raw_requests(False),
                    concurrency=concurrency, duration=seconds / rounds, validate=_check))
    finally:
        for target in live:
            target.close()
    rates = {}
    errors = 0
    for name, results in parts.items():
        total = merge(results)
        rates[name] = total.ok / total.seconds if total.seconds else 0.0
        errors += total.errors
    one, two = rates["ailb-workers1"], rates["ailb-workers2"]
    return {"concurrency": concurrency, "seconds": seconds, "rps_1_worker": round(one, 1),
            "rps_2_workers": round(two, 1), "ratio": round(two / one, 2) if one else None,
            "errors": errors, "cpus": len(os.sched_getaffinity(0))}


def describe(result: dict[str, Any]) -> str:
    return (f"workers: 1 worker {result['rps_1_worker']} req/s, 2 workers "
            f"{result['rps_2_workers']} req/s -> x{result['ratio']} (JSON, c="
            f"{result['concurrency']}, {result['seconds']} s each, {result['cpus']} CPUs, "
            f"{result['errors']} errors)")


def measure(seconds: float, concurrency: int) -> dict[str, Any]:
    """The comparison with its own upstream (bench/run.py calls it after its table)."""
    logs = targets.HERE / "out"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ailb-bench-workers-") as tmp:
        up = start_upstream(Path(tmp), logs, None,
                            float(os.environ.get("BENCH_STREAM_GAP_MS", "1")),
                            os.environ.get("BENCH_UPSTREAM") == "python")
        try:
            result = compare(up, Path(tmp), logs, concurrency, seconds, 1.0, 4)
        finally:
            up.close()
    (logs / "workers.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> int:
    seconds = float(os.environ.get("BENCH_SECONDS", "5"))
    concurrency = max(int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,32").split(","))
    print(describe(measure(seconds, concurrency)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
