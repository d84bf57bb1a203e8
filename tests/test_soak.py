"""`make soak` (bench/soak.py): a few seconds of it end to end, with its SIGKILL and restart of
AILB and its faults, must hold every invariant; and its checks (bench/soak_check.py) must
flag what breaks them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _load_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_check", ROOT / "bench" / "soak_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("soak_check", module)
    spec.loader.exec_module(module)
    return module


check = _load_check()


def test_a_short_soak_with_a_kill_holds_every_invariant(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOAK_")}
    env.update(SOAK_SECONDS="8", SOAK_CLIENTS="8", SOAK_FAULT_PHASE_S="0.3",
               SOAK_WARMUP_S="1", SOAK_SAMPLE_S="0.25", SOAK_OUT=str(tmp_path))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["ok"] and all(c["held"] for c in report["checks"])
    requests, ledger = report["requests"], report["ledger"]
    assert requests["served_json"] > 0 and requests["served_stream"] > 0
    assert ledger["rows"] >= requests["served"] > 0
    assert report["kill"] is not None and report["kill"]["ready_again_after_s"] > 0
    assert report["errors"]["unexpected"]["total"] == 0
    assert set(report["fault_phases"]) == {
        "healthy", "slow", "http_500", "http_429_retry_after", "cut_before_first_chunk",
        "cut_mid_stream", "down"}
    assert {"segment_0", "segment_1"} <= set(report["rss"])
    assert report["rss"]["slope_mb_per_hour"] is not None


def test_the_slope_is_shared_by_the_segments_and_ignores_the_restart_drop() -> None:
    points = [(0, x, 100 + 2 * x) for x in range(10)] + [(1, x, 60 + 2 * x) for x in range(10, 20)]
    assert abs(check.pooled_slope(points) - 2.0) < 1e-12
    assert check.pooled_slope([(0, 1.0, 5.0), (1, 2.0, 7.0)]) is None  # one x per segment


def test_warm_up_and_the_time_outside_a_segment_are_left_out() -> None:
    segments = [check.Window(0, 100), check.Window(110, 200)]
    samples = [check.Sample(t, 1.0, 0, 0 if t < 105 else 1) for t in (5, 30, 99, 101, 115, 150)]
    kept = check.steady(samples, segments, warmup_s=20)
    assert [s.at for s in kept] == [30, 99, 150]


def test_the_late_half_slope_sees_growth_that_levels_off() -> None:
    # RSS that grows and then stays flat in each segment: the whole slope is positive, the
    # later half's is zero
    samples = [check.Sample(t, 50 + min(t % 100, 40), 0, t // 100) for t in range(0, 200, 2)]
    assert [s.at for s in check.late_half(samples)] == [*range(50, 100, 2), *range(150, 200, 2)]
    slopes = check.rss_slopes(samples)
    assert slopes["mb_per_hour"] > 0
    assert slopes["late_half_mb_per_hour"] == 0


def test_errors_are_at_the_kill_injected_or_unexpected() -> None:
    kill = check.Window(50, 53, "kill")
    faults = [check.Window(10, 20, "cut_mid_stream"), check.Window(20, 30, "slow")]

    def cls(start: float, end: float, kind: str, deployment: str) -> str:
        outcome = check.Outcome(start, end, kind, deployment, "id")
        return str(check.classify(outcome, kill, faults, "fake-b"))

    assert cls(49, 50.5, "stream_broken:RemoteProtocolError", "fake-a") == "kill"
    assert cls(52, 52.1, "transport:ConnectError", "") == "kill"
    assert cls(12, 13, "stream_error:upstream_error", "fake-b") == "injected"
    assert cls(12, 13, "stream_error:upstream_error", "fake-a") == "unexpected"
    assert cls(12, 13, "http_502:upstream_error", "fake-b") == "unexpected"
    assert cls(22, 23, "stream_error:upstream_error", "fake-b") == "unexpected"
    assert cls(54, 55, "transport:ConnectError", "") == "unexpected"


def _ledger(ids: list[str], open_usd: float = 0.0) -> Any:
    return check.LedgerFacts(rows=len(ids), ids=set(ids), cost_usd=len(ids) * 0.1,
                             spend_usd=len(ids) * 0.1 + open_usd, open_reservations=1,
                             open_reservations_usd=open_usd,
                             cost_by_id={i: 0.1 for i in ids})


def _failed(served: list[str], ledger: Any, unexpected: int = 0) -> list[str]:
    limits = check.Limits(clients=4)
    slopes = {"mb_per_hour": 1.0, "mb_per_10k_requests": 0.1}
    checks = check.verdict(served, 10, Counter(unexpected=unexpected), ledger, slopes, True,
                           limits)
    return [name for name, held, _ in checks if not held]


def test_the_verdict_holds_for_a_good_run_and_names_what_broke() -> None:
    assert _failed(["a", "b", "c"], _ledger(["a", "b", "c", "d"], 0.3)) == []
    assert _failed(["a", "b", "c"], _ledger(["a", "b"])) == [
        "ledger rows >= requests served", "every served request has its ledger row"]
    assert _failed(["a", "b"], _ledger(["a", "x"])) == ["every served request has its ledger row"]
    assert _failed(["a"], _ledger(["a"]), unexpected=1) == [
        "unexpected client errors within the limit"]
    lost_spend = _ledger(["a", "b"])
    lost_spend.spend_usd = 0.1
    assert "spend = ledger cost + open reservations" in _failed(["a", "b"], lost_spend)
    assert "spend >= cost of the requests served" in _failed(["a", "b"], lost_spend)
