"""The soak's settings (from the environment), the record of one run, and its report: the
figures as JSON (bench/out/soak.json) and as text. See docs/soak.md."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import soak_check
from soak_check import Sample, Window
from soak_load import Tally

HERE = Path(__file__).resolve().parent
FAULTY = "fake-b"  # the deployment faults are injected in; "fake-a" stays healthy


def _env(name: str, default: float, low: float, high: float) -> float:
    value = float(os.environ.get(name) or default)
    if not low <= value <= high:
        raise SystemExit(f"{name}={value} is outside [{low}, {high}]")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: float
    clients: int
    kill_at: float
    fault_phase_s: float
    warmup_s: float
    sample_s: float
    max_unexpected: int
    max_rss_mb_per_hour: float | None
    out: Path

    @classmethod
    def from_env(cls) -> Settings:
        rss = os.environ.get("SOAK_MAX_RSS_MB_PER_HOUR")
        return cls(seconds=_env("SOAK_SECONDS", 600, 4, 7 * 86400),
                   clients=int(_env("SOAK_CLIENTS", 16, 1, 256)),
                   kill_at=_env("SOAK_KILL_AT", 0.5, 0.1, 0.9),
                   fault_phase_s=_env("SOAK_FAULT_PHASE_S", 15, 0.2, 3600),
                   warmup_s=_env("SOAK_WARMUP_S", 60, 0, 3600),
                   sample_s=_env("SOAK_SAMPLE_S", 1, 0.1, 60),
                   max_unexpected=int(_env("SOAK_MAX_UNEXPECTED_ERRORS", 0, 0, 1e9)),
                   max_rss_mb_per_hour=float(rss) if rss else None,
                   out=Path(os.environ.get("SOAK_OUT") or HERE / "out"))


@dataclass
class Run:
    """What the tasks of one run share."""

    settings: Settings
    tally: Tally
    t0: float  # trio time of the start; every time below is in seconds since then
    samples: list[Sample]  # AILB's RSS, while it is up
    segments: list[Window]  # AILB up: before the kill, then (once ready) after the restart
    faults: list[Window]  # the fault phases, as they happened
    kill: Window | None = None  # SIGKILL until ready again, plus KILL_GRACE_S
    cpu_s: float = 0.0  # AILB's CPU seconds, both processes


def _rss_summary(samples: list[Sample], steady: list[Sample]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": len(samples), "steady_samples": len(steady)}
    for segment in sorted({s.segment for s in samples}):
        all_mb = [s.rss_mb for s in samples if s.segment == segment]
        kept = [s.rss_mb for s in steady if s.segment == segment]
        out[f"segment_{segment}"] = {
            "first_mb": round(all_mb[0], 1), "steady_first_mb": round(kept[0], 1) if kept
            else None, "last_mb": round(all_mb[-1], 1), "peak_mb": round(max(all_mb), 1)}
    return out


def report(run: Run, ledger: soak_check.LedgerFacts, exit_code: int | None,
           load_start: float) -> dict[str, Any]:
    settings, tally = run.settings, run.tally
    by_class: dict[str, Counter[str]] = {c: Counter() for c in ("kill", "injected",
                                                                 "unexpected")}
    unexpected: list[dict[str, Any]] = []
    for error in tally.errors:
        verdict_class = soak_check.classify(error, run.kill, run.faults, FAULTY)
        by_class[verdict_class][error.kind] += 1
        if verdict_class == "unexpected" and len(unexpected) < 20:
            unexpected.append(asdict(error))
    classes = Counter({c: sum(k.values()) for c, k in by_class.items()})
    steady = soak_check.steady(run.samples, run.segments, settings.warmup_s)
    slopes = soak_check.rss_slopes(steady)
    limits = soak_check.Limits(settings.clients, settings.max_unexpected,
                               settings.max_rss_mb_per_hour)
    checks = soak_check.verdict(tally.served_ids, tally.sent, classes, ledger, slopes,
                                run.kill is not None and len(run.segments) == 2, limits)
    checks.append(("AILB drained and exited 0 on SIGTERM at the end", exit_code == 0,
                   f"exit code {exit_code}"))
    seconds = run.segments[-1].end
    phases = Counter(w.name for w in run.faults)
    return {
        "settings": {k: str(v) if isinstance(v, Path) else v
                     for k, v in asdict(settings).items()},
        "seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": load_start,
                    "loadavg_end": os.getloadavg()[0]},
        "requests": {"sent": tally.sent, "finished": tally.finished, "served": tally.served,
                     "served_json": tally.served_json, "served_stream": tally.served_stream,
                     "per_second": round(tally.finished / seconds, 1) if seconds else None},
        "errors": {c: {"total": classes[c], "by_kind": dict(k.most_common())}
                   for c, k in by_class.items()},
        "unexpected_samples": unexpected,
        "kill": None if run.kill is None else {
            "at_s": round(run.kill.start, 2),
            "ready_again_after_s": round(run.kill.end - soak_check.KILL_GRACE_S
                                         - run.kill.start, 2),
            "window_s": [round(run.kill.start, 2), round(run.kill.end, 2)]},
        "fault_phases": dict(phases),
        "rss": {**_rss_summary(run.samples, steady),
                "warmup_s": settings.warmup_s,
                "slope_mb_per_hour": _round(slopes["mb_per_hour"]),
                "slope_mb_per_10k_requests": _round(slopes["mb_per_10k_requests"]),
                "slope_late_half_mb_per_hour": _round(slopes["late_half_mb_per_hour"]),
                "samples_at_mb_finished_segment": [
                    [round(s.at, 1), round(s.rss_mb, 2), s.finished, s.segment]
                    for s in run.samples]},
        "ailb_cpu_s": round(run.cpu_s, 1),
        "ledger": {"rows": ledger.rows, "by_status": ledger.by_status,
                   "duplicates": ledger.duplicates, "cost_usd": round(ledger.cost_usd, 6),
                   "spend_usd": round(ledger.spend_usd, 6),
                   "served_cost_usd": round(soak_check.served_cost_usd(ledger,
                                                                       tally.served_ids), 6),
                   "open_reservations": ledger.open_reservations,
                   "open_reservations_usd": round(ledger.open_reservations_usd, 6)},
        "checks": [{"check": name, "held": held, "figures": figures}
                   for name, held, figures in checks],
        "ok": all(held for _, held, _ in checks),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def describe(rep: dict[str, Any]) -> str:
    req, rss, led = rep["requests"], rep["rss"], rep["ledger"]
    kill = rep["kill"] or {}
    lines = [
        f"soak: {rep['seconds']}s, {rep['settings']['clients']} clients, load average "
        f"{rep['machine']['loadavg_start']:.2f} -> {rep['machine']['loadavg_end']:.2f} on "
        f"{rep['machine']['cpus']} CPUs",
        f"requests: {req['finished']} finished ({req['per_second']}/s), served "
        f"{req['served']} ({req['served_json']} JSON, {req['served_stream']} streamed)",
        f"SIGKILL at {kill.get('at_s')}s, ready again after {kill.get('ready_again_after_s')}s",
        f"fault phases on {FAULTY}: " + ", ".join(f"{k} x{v}"
                                                  for k, v in rep["fault_phases"].items()),
    ]
    for cls, info in rep["errors"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in info["by_kind"].items()) or "-"
        lines.append(f"errors {cls}: {info['total']} ({kinds})")
    lines += [
        f"RSS: slope {rss['slope_mb_per_hour']} MB/h, {rss['slope_mb_per_10k_requests']} MB "
        f"per 10k requests, {rss['slope_late_half_mb_per_hour']} MB/h over the later half "
        f"({rss['steady_samples']} of {rss['samples']} samples, warm-up "
        f"{rss['warmup_s']:g}s per segment left out); "
        + "; ".join(f"{k}: {v}" for k, v in rss.items() if k.startswith("segment_")),
        f"ledger: {led['rows']} rows (by status {led['by_status']}) vs {req['served']} served; "
        f"spend ${led['spend_usd']} = ledger ${led['cost_usd']} + {led['open_reservations']} "
        f"open reservations ${led['open_reservations_usd']}; served cost "
        f"${led['served_cost_usd']}",
        f"AILB CPU: {rep['ailb_cpu_s']}s",
    ]
    lines += [f"  [{'ok' if c['held'] else 'FAILED'}] {c['check']}: {c['figures']}"
              for c in rep["checks"]]
    return "\n".join(lines)

