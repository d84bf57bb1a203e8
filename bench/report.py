"""Measurements, the ratios between targets, and their rendering as text and Markdown."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from loadgen import LoadResult

CPU_RATIO_TARGET = 1.5
KEY_RPS_TARGET = 0.85  # a virtual key (auth, limits, budget, ledger): within 15 %
# The same key with its state in PostgreSQL + Valkey (ailb-shared) vs the embedded store
# (ailb-key): the gateway's CPU per request
SHARED_CPU_RATIO_TARGET = 1.15
ADDED_P50_TARGET_MS = 2.0
# The opt-in feature targets (bench/features.py), each against plain ailb: (target, short name).
FEATURES = (("ailb-memory", "memory"), ("ailb-rag", "rag"))


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000.0


@dataclass
class Measurement:
    target: str
    scenario: str  # "json" or "stream"
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    ttfb_p50_ms: float | None
    ttfb_p99_ms: float | None
    cpu_ms_per_req: float | None
    cpu_util_pct: float  # CPU of the measured process tree / wall time
    peak_rss_mib: float
    loadgen_cpu_util_pct: float
    other_cpu_pct: float  # everything else on the machine: noise, should be near 0
    reconnects: int
    upstream_conns_per_req: float | None = None  # new connections nginx accepted per request
    # CPU of the servers holding the target's state (ailb-shared: PostgreSQL + Valkey) per
    # answer; not in cpu_ms_per_req
    backend_cpu_ms_per_req: float | None = None
    error_samples: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, target: str, stream: bool, res: LoadResult, cpu_s: float, rss_kib: int,
              loadgen_cpu_s: float, other_cpu_s: float) -> Measurement:
        done = res.ok
        wall = res.seconds if res.seconds > 0 else 1.0
        return cls(
            target=target, scenario="stream" if stream else "json",
            concurrency=res.concurrency, requests=done, errors=res.errors, seconds=res.seconds,
            rps=done / wall,
            p50_ms=_pct(res.latencies, 0.50), p99_ms=_pct(res.latencies, 0.99),
            ttfb_p50_ms=_pct(res.ttfbs, 0.50) if stream else None,
            ttfb_p99_ms=_pct(res.ttfbs, 0.99) if stream else None,
            cpu_ms_per_req=cpu_s * 1000.0 / done if done else None,
            cpu_util_pct=100.0 * cpu_s / wall, peak_rss_mib=rss_kib / 1024.0,
            loadgen_cpu_util_pct=100.0 * loadgen_cpu_s / wall,
            other_cpu_pct=max(0.0, 100.0 * other_cpu_s / wall),
            reconnects=res.reconnects, error_samples=res.error_samples,
        )


def _find(ms: list[Measurement], target: str, scenario: str, conc: int) -> Measurement | None:
    return next((m for m in ms if (m.target, m.scenario, m.concurrency) == (target, scenario,
                                                                           conc)), None)


def _get(m: Measurement | None, attr: str) -> float | None:
    value = getattr(m, attr) if m is not None else None
    return float(value) if value is not None else None


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _sub(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def ratios(ms: list[Measurement], concurrencies: list[int]) -> list[dict[str, Any]]:
    """AILB against the pass-through and direct, per scenario and concurrency."""
    rows: list[dict[str, Any]] = []
    for scenario in ("json", "stream"):
        for conc in concurrencies:
            a = _find(ms, "ailb", scenario, conc)
            p = _find(ms, "passthrough", scenario, conc)
            d = _find(ms, "direct", scenario, conc)
            cpu = _div(_get(a, "cpu_ms_per_req"), _get(p, "cpu_ms_per_req"))
            added = _sub(_get(a, "p50_ms"), _get(d, "p50_ms"))
            row: dict[str, Any] = {
                "scenario": scenario, "concurrency": conc,
                "cpu_per_req_ailb_over_passthrough": cpu,
                "cpu_target_met": None if cpu is None else cpu <= CPU_RATIO_TARGET,
                "rps_ailb_over_passthrough": _div(_get(a, "rps"), _get(p, "rps")),
                "p50_added_ms_ailb_minus_direct": added,
                "p50_added_ms_passthrough_minus_direct": _sub(_get(p, "p50_ms"),
                                                              _get(d, "p50_ms")),
                "ttfb_p50_added_ms_ailb_minus_direct": _sub(_get(a, "ttfb_p50_ms"),
                                                            _get(d, "ttfb_p50_ms")),
            }
            k = _find(ms, "ailb-key", scenario, conc)
            key_rps = _div(_get(k, "rps"), _get(a, "rps"))
            row["rps_key_over_admin"] = key_rps
            row["cpu_per_req_key_over_admin"] = _div(_get(k, "cpu_ms_per_req"),
                                                     _get(a, "cpu_ms_per_req"))
            row["key_target_met"] = None if key_rps is None else key_rps >= KEY_RPS_TARGET
            if (sh := _find(ms, "ailb-shared", scenario, conc)) is not None:
                row.update(_shared_ratios(sh, k))
            for name, short in FEATURES:
                if (f := _find(ms, name, scenario, conc)) is None:
                    continue
                row[f"rps_{short}_over_ailb"] = _div(_get(f, "rps"), _get(a, "rps"))
                row[f"cpu_per_req_{short}_over_ailb"] = _div(_get(f, "cpu_ms_per_req"),
                                                             _get(a, "cpu_ms_per_req"))
                row[f"p50_added_ms_{short}_minus_ailb"] = _sub(_get(f, "p50_ms"),
                                                               _get(a, "p50_ms"))
            if conc == 1 and scenario == "json":
                row["added_p50_target_met"] = None if added is None else (
                    added < ADDED_P50_TARGET_MS)
            rows.append(row)
    return rows


def _shared_ratios(sh: Measurement, k: Measurement | None) -> dict[str, Any]:
    """ailb-shared (PostgreSQL + Valkey) against ailb-key (the embedded store), same key."""
    gw_sh, gw_k = _get(sh, "cpu_ms_per_req"), _get(k, "cpu_ms_per_req")
    backend = _get(sh, "backend_cpu_ms_per_req")
    cpu = _div(gw_sh, gw_k)
    total = None if gw_sh is None or backend is None else gw_sh + backend
    return {
        "cpu_ms_per_req_key": gw_k,
        "cpu_ms_per_req_shared": gw_sh,
        "backend_cpu_ms_per_req_shared": backend,
        "cpu_per_req_shared_over_key": cpu,
        "shared_cpu_target_met": None if cpu is None else cpu <= SHARED_CPU_RATIO_TARGET,
        "cpu_per_req_shared_with_backends_over_key": _div(total, gw_k),
        "rps_shared_over_key": _div(_get(sh, "rps"), _get(k, "rps")),
        "p50_added_ms_shared_minus_key": _sub(_get(sh, "p50_ms"), _get(k, "p50_ms")),
    }


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


COLUMNS = ("target", "scenario", "conc", "req/s", "p50 ms", "p99 ms", "TTFB p50", "TTFB p99",
           "CPU ms/req", "CPU %", "peak RSS MiB", "LG CPU %", "other CPU %", "upstream conn/req",
           "errors")


def table_rows(ms: list[Measurement]) -> list[list[str]]:
    return [[m.target, m.scenario, str(m.concurrency), _f(m.rps, 0), _f(m.p50_ms),
             _f(m.p99_ms), _f(m.ttfb_p50_ms), _f(m.ttfb_p99_ms), _f(m.cpu_ms_per_req, 3),
             _f(m.cpu_util_pct, 0), _f(m.peak_rss_mib, 1), _f(m.loadgen_cpu_util_pct, 0),
             _f(m.other_cpu_pct, 0), _f(m.upstream_conns_per_req), str(m.errors)] for m in ms]


def ratio_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    def verdict(ok: bool | None) -> str:
        return "" if ok is None else (" ok" if ok else " OVER")

    out = []
    for r in rows:
        out.append([r["scenario"], str(r["concurrency"]),
                    _f(r["cpu_per_req_ailb_over_passthrough"]) + verdict(r["cpu_target_met"]),
                    _f(r["rps_ailb_over_passthrough"]),
                    _f(r["p50_added_ms_ailb_minus_direct"])
                    + verdict(r.get("added_p50_target_met")),
                    _f(r["p50_added_ms_passthrough_minus_direct"]),
                    _f(r["ttfb_p50_added_ms_ailb_minus_direct"]),
                    _f(r.get("rps_key_over_admin")) + verdict(r.get("key_target_met"))])
    return out


RATIO_COLUMNS = ("scenario", "conc", f"CPU/req AILB÷PT (≤{CPU_RATIO_TARGET})", "req/s AILB÷PT",
                 f"p50 AILB-direct ms (<{ADDED_P50_TARGET_MS:g} at c=1)",
                 "p50 PT-direct ms", "TTFB p50 AILB-direct ms",
                 f"req/s key÷admin (≥{KEY_RPS_TARGET})")


FEATURE_RATIO_COLUMNS = ("scenario", "conc", "req/s memory÷AILB", "CPU/req memory÷AILB",
                         "p50 memory-AILB ms", "req/s RAG÷AILB", "CPU/req RAG÷AILB",
                         "p50 RAG-AILB ms")


def feature_ratio_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The memory and RAG targets against plain AILB; empty when neither was measured."""
    if not any(f"rps_{short}_over_ailb" in r for r in rows for _, short in FEATURES):
        return []
    out = []
    for r in rows:
        cells = [r["scenario"], str(r["concurrency"])]
        for _, short in FEATURES:
            cells += [_f(r.get(f"rps_{short}_over_ailb")),
                      _f(r.get(f"cpu_per_req_{short}_over_ailb")),
                      _f(r.get(f"p50_added_ms_{short}_minus_ailb"))]
        out.append(cells)
    return out


SHARED_RATIO_COLUMNS = ("scenario", "conc", "CPU ms/req key", "CPU ms/req shared",
                        f"CPU/req shared÷key (≤{SHARED_CPU_RATIO_TARGET})",
                        "backend CPU ms/req", "(shared+backend)÷key", "req/s shared÷key",
                        "p50 shared-key ms")


def shared_ratio_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """ailb-shared against ailb-key; empty when ailb-shared was not measured."""
    out = []
    for r in rows:
        if "cpu_per_req_shared_over_key" not in r:
            continue
        met = r["shared_cpu_target_met"]
        out.append([r["scenario"], str(r["concurrency"]), _f(r["cpu_ms_per_req_key"], 3),
                    _f(r["cpu_ms_per_req_shared"], 3),
                    _f(r["cpu_per_req_shared_over_key"])
                    + ("" if met is None else (" ok" if met else " OVER")),
                    _f(r["backend_cpu_ms_per_req_shared"], 3),
                    _f(r["cpu_per_req_shared_with_backends_over_key"]),
                    _f(r["rps_shared_over_key"]), _f(r["p50_added_ms_shared_minus_key"])])
    return out


def text_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*header), sep, *(fmt.format(*r) for r in rows)])


def md_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def as_json(ms: list[Measurement], ratio_list: list[dict[str, Any]],
            meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "measurements": [asdict(m) for m in ms], "ratios": ratio_list}
