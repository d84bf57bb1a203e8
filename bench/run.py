"""AILB benchmark: nginx direct vs a bare pass-through vs AILB, in one run. See docs/benchmarks.md.

Environment knobs: BENCH_SECONDS (measured seconds per row, default 5), BENCH_WARMUP (default 1),
BENCH_CONCURRENCY (default "1,32"), BENCH_TARGETS (default
"direct,passthrough,ailb,ailb-key,ailb-shared"; "ailb-shared" needs "ailb-key"; also
"ailb-memory" and "ailb-rag", which need "ailb"; the peers "portkey" and "litellm", installed
on first use into bench/.peers/, see bench/peers.py),
BENCH_STREAM_GAP_MS (pause between upstream SSE events, default 1), BENCH_UPSTREAM ("nginx" or
"python"), BENCH_ROUNDS (rounds each row's time is cut into, targets alternating, default 3),
BENCH_AILB_SRC (directory holding the ailb package under test, default this
checkout), BENCH_NO_DOCS=1 (leave docs/benchmarks.md alone), BENCH_WORKERS=0 (skip the
1-vs-2-workers comparison of bench/workers.py), BENCH_STREAM_COST=0 (skip the per-event CPU
row of bench/stream_cost.py), BENCH_CAPACITY=0 (skip the paced-stream capacity row of
bench/capacity.py; BENCH_CAPACITY_BUDGET its seconds, default 60).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

import docs_update
import features
import peers
import report
import shared_state
import stream_rows
import targets
import workers
from loadgen import loop_name
from procs import BenchError
from rows import measure_row
from upstream import Upstream, check_upstream, start_upstream

OUT = targets.HERE / "out"
DOC = targets.REPO / "docs" / "benchmarks.md"
DEFAULT_TARGETS = ("direct", "passthrough", "ailb", "ailb-key", "ailb-shared")
FEATURE_TARGETS = ("ailb-memory", "ailb-rag")  # opt-in; reported as ratios to ailb
ALL_TARGETS = DEFAULT_TARGETS + FEATURE_TARGETS + peers.PEER_NAMES  # peers: opt-in too


ALLOWED: set[int] = set()  # the CPUs this process may use, before the table pins it


def _env_float(name: str, default: float, low: float, high: float) -> float:
    value = float(os.environ.get(name, default))
    if not low <= value <= high:
        raise SystemExit(f"{name}={value} is outside [{low}, {high}]")
    return value


def _cores() -> tuple[int | None, int | None, str]:
    """(gateway core, load-generator core, description); pins this process to the latter."""
    cpus = sorted(os.sched_getaffinity(0))
    ALLOWED.update(cpus)  # the workers comparison runs unpinned, after the table
    if len(cpus) < 2:
        return None, None, "none (fewer than 2 CPUs): gateway and load generator share"
    gw, lg = cpus[0], cpus[1]
    os.sched_setaffinity(0, {lg})
    return gw, lg, f"gateway on CPU {gw}; load generator and nginx on CPU {lg}"


def _print_row(m: report.Measurement) -> None:
    row = report.table_rows([m])[0]
    print("  " + "  ".join(f"{h}={v}" for h, v in zip(report.COLUMNS, row, strict=True)),
          flush=True)
    for sample in m.error_samples:
        print(f"    error: {sample}", flush=True)


def _start(name: str, up: Upstream, gw_core: int | None, tmp: Path, stack: ExitStack
           ) -> targets.Target:
    """The target, its processes stopped by ``stack``. Raises BenchError."""
    if name == "ailb-shared":  # AILB on PostgreSQL + Valkey; the servers are stopped after it
        return shared_state.target(up, gw_core, OUT, tmp, stack)
    if name in peers.PEER_NAMES:
        target = peers.start(name, up, gw_core, OUT, tmp)
    elif name == "direct":
        target = targets.direct(up)
    elif name == "passthrough":
        target = targets.passthrough(up, gw_core, OUT)
    else:
        target = targets.ailb(up, gw_core, OUT, tmp)
    stack.callback(target.close)
    return target


def _start_feature(name: str, up: Upstream, gw_core: int | None, tmp: Path,
                   stack: ExitStack, shared: dict[str, targets.Target | BenchError]
                   ) -> targets.Target:
    """ailb-memory or ailb-rag, on the one AILB process with memory and RAG on (started by the
    first of them). Raises BenchError."""
    base = shared.get("process")
    if isinstance(base, BenchError):
        raise base
    if base is None:
        try:
            base = targets.ailb(up, gw_core, OUT, tmp, features=True)
        except BenchError as exc:
            shared["process"] = exc
            raise
        stack.callback(base.close)
        shared["process"] = base
        print(f"{base.name}: {base.label} (pid {base.pid})", flush=True)
    return features.memory_target(base) if name == "ailb-memory" else features.rag_target(base)


def _start_all(names: list[str], up: Upstream, gw_core: int | None, tmp: Path,
               stack: ExitStack, notes: list[str]) -> list[targets.Target]:
    started: list[targets.Target] = []
    shared: dict[str, targets.Target | BenchError] = {}  # the feature process
    for name in names:
        if name == "ailb-key":  # the same process as "ailb", called with a virtual key
            base = next((t for t in started if t.name == "ailb"), None)
            if base is None:
                notes.append("ailb-key needs the ailb target")
                continue
            key_target = targets.ailb_with_key(base)
            key_target.sanity_check()
            started.append(key_target)
            continue
        try:
            if name in FEATURE_TARGETS:
                target = _start_feature(name, up, gw_core, tmp, stack, shared)
            else:
                target = _start(name, up, gw_core, tmp, stack)
        except BenchError as exc:
            notes.append(f"{name} could not start: {exc}".splitlines()[0])
            if name in peers.PEER_NAMES:  # an opt-in peer that cannot install: skipped
                print(f"SKIP {name}: {str(exc).splitlines()[0]}", flush=True)
            else:
                print(f"FAILED to start {name}: {exc}", flush=True)
            continue
        try:
            target.sanity_check()
        except BenchError as exc:
            notes.append(f"{name} answered wrongly: {exc}".splitlines()[0])
            print(f"FAILED {name}: {exc}", flush=True)
            target.close()
            continue
        backends = f"; backends: pids {list(target.backend_pids)}" if target.backend_pids else ""
        print(f"{name}: {target.label} (pid {target.pid}{backends})", flush=True)
        started.append(target)
    return started


def run(names: list[str], concs: list[int], warmup: float, seconds: float, rounds: int,
        stack: ExitStack) -> tuple[list[report.Measurement], dict[str, Any], dict[str, Any]]:
    """Every target is started first, then each row is measured on all targets in alternating
    rounds (see rows.py), so that a change in background load hits them alike."""
    gw_core, lg_core, pinning = _cores()
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ailb-bench-")))
    notes: list[str] = []
    if "ailb" in names and (why := targets.ailb_importable()) is not None:
        for name in ("ailb", "ailb-shared", *FEATURE_TARGETS):
            if name in names:
                names.remove(name)
        notes.append(f"AILB skipped: {why}.")
        print(f"SKIP ailb: {why}", flush=True)
    gap = _env_float("BENCH_STREAM_GAP_MS", 1.0, 0.0, 100.0)
    force_python = os.environ.get("BENCH_UPSTREAM", "nginx") == "python"
    up = start_upstream(tmp, OUT, lg_core, gap, force_python=force_python)
    stack.callback(up.close)
    check_upstream(up)
    notes = up.notes + notes
    print(f"upstream: {up.version} on ports {up.json_port}/{up.sse_port} ({up.stream_mode})")
    for note in up.notes:
        print(f"  note: {note}")
    live = _start_all(names, up, gw_core, tmp, stack, notes)
    if lg_core is not None and any(t.backend_pids for t in live):  # they inherit our affinity
        pinning += f"; PostgreSQL and Valkey (ailb-shared) on CPU {lg_core}"
    results: list[report.Measurement] = []
    for stream in (False, True):
        for conc in concs:
            rows, failed = measure_row(live, stream, conc, warmup, seconds, rounds, up)
            for m in rows:
                results.append(m)
                _print_row(m)
            for target in [t for t in live if t.name in failed]:
                notes.append(f"{target.name} failed: {failed[target.name]}".splitlines()[0])
                print(f"FAILED {target.name}: {failed[target.name]}", flush=True)
                live.remove(target)
                target.close()
    extra = stream_rows.measure(live, warmup, seconds, rounds, notes)
    busy = max((m.other_cpu_pct for m in results), default=0.0)
    if busy > 25:
        notes.append(f"The machine was busy: other processes used up to {busy:.0f} % CPU during "
                     "a row (see 'other CPU %'); absolute numbers are noisy, ratios less so.")
    if targets.AILB_SRC != targets.REPO and "ailb" in names:
        notes.append(f"AILB from BENCH_AILB_SRC={targets.AILB_SRC}, not this checkout.")
    meta = {"machine": docs_update.machine(targets.REPO), "upstream": up.version,
            "stream_mode": up.stream_mode, "loadgen": f"bench/loadgen.py on {loop_name()}",
            "seconds": seconds, "rounds": rounds, "warmup": warmup, "pinning": pinning,
            "targets": names, "concurrency": concs, "notes": notes}
    order = {n: i for i, n in enumerate(ALL_TARGETS)}
    results.sort(key=lambda m: (order[m.target], m.scenario, m.concurrency))
    return results, meta, extra


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    seconds = _env_float("BENCH_SECONDS", 5.0, 0.5, 120.0)
    warmup = _env_float("BENCH_WARMUP", 1.0, 0.1, 30.0)
    rounds = int(_env_float("BENCH_ROUNDS", 3, 1, 20))
    concs = [int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,32").split(",")]
    if not all(1 <= c <= 256 for c in concs):
        raise SystemExit("BENCH_CONCURRENCY: each value must be within 1..256")
    names = [n for n in os.environ.get("BENCH_TARGETS", ",".join(DEFAULT_TARGETS)).split(",")
             if n]
    if unknown := set(names) - set(ALL_TARGETS):
        raise SystemExit(f"BENCH_TARGETS: unknown {sorted(unknown)}; known {ALL_TARGETS}")
    if set(names) & set(FEATURE_TARGETS) and "ailb" not in names:
        raise SystemExit("BENCH_TARGETS: ailb-memory and ailb-rag are reported as ratios to "
                         "plain AILB: add ailb")
    if "ailb-shared" in names and "ailb-key" not in names:
        raise SystemExit("BENCH_TARGETS: ailb-shared is reported as a ratio to ailb-key: add "
                         "ailb and ailb-key")
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            results, meta, extra = run(names, concs, warmup, seconds, rounds, stack)
    except KeyboardInterrupt:
        print("\ninterrupted; every process this run started is stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    ratio_list = report.ratios(results, concs)
    print("\n" + report.text_table(report.COLUMNS, report.table_rows(results)))
    print("\n" + report.text_table(report.RATIO_COLUMNS, report.ratio_rows(ratio_list)))
    shared_rows = report.shared_ratio_rows(ratio_list)
    if shared_rows:
        print("\nShared state (PostgreSQL + Valkey) vs the embedded store, same virtual key; "
              "backend CPU = the servers', not in the gateway's:")
        print(report.text_table(report.SHARED_RATIO_COLUMNS, shared_rows))
    feature_rows = report.feature_ratio_rows(ratio_list)
    if feature_rows:
        print("\n" + report.text_table(report.FEATURE_RATIO_COLUMNS, feature_rows))
    peer_rows = peers.compare_rows(results)
    if peer_rows:
        print("\nAILB and the peers (PT = pass-through):")
        print(report.text_table(peers.COMPARE_COLUMNS, peer_rows))
    extra_md = stream_rows.report_all(extra)
    if peer_rows:
        extra_md = ("AILB and the peers, from the table above (PT = pass-through):\n\n"
                    + report.md_table(peers.COMPARE_COLUMNS, peer_rows) + "\n\n" + extra_md)
    for note in meta["notes"]:
        print(f"note: {note}")
    data = report.as_json(results, ratio_list, meta)
    data.update(stream_rows.as_json(extra))
    (OUT / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {OUT / 'results.json'} in {time.monotonic() - started:.0f}s; "
          f"gateway logs in {OUT}")
    if os.environ.get("BENCH_NO_DOCS") != "1":
        section = docs_update.results_section(
            meta, report.md_table(report.COLUMNS, report.table_rows(results)),
            report.md_table(report.RATIO_COLUMNS, report.ratio_rows(ratio_list)),
            report.md_table(report.FEATURE_RATIO_COLUMNS, feature_rows) if feature_rows else None,
            report.md_table(report.SHARED_RATIO_COLUMNS, shared_rows) if shared_rows else None,
            extra_md)
        docs_update.update_doc(DOC, section)
        print(f"updated {DOC}")
    ok = all(m.errors == 0 for m in results)
    if os.environ.get("BENCH_WORKERS") != "0":  # ailb --workers 1 vs 2 (bench/workers.py)
        if ALLOWED:  # undo the table's pinning: every process of the comparison inherits it
            os.sched_setaffinity(0, ALLOWED)
        try:
            compared = workers.measure(seconds, max(concs))
        except BenchError as exc:
            print(f"workers comparison failed: {exc}", file=sys.stderr)
            return 1
        print("\n" + workers.describe(compared) + f" (written to {OUT / 'workers.json'})")
        ok = ok and compared["errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
