"""The soak's arithmetic and its verdict (no I/O but reading the finished SQLite ledger).

* RSS slope: a least-squares line through the RSS samples of each segment (before the kill,
  after the restart), warm-up left out, with one slope shared by both segments and an intercept
  of its own for each (the restart's drop is no trend). Against time (MB per hour) and against
  requests finished (MB per 10k requests).
* Errors: each client-visible error is either at the kill (its request overlapped the time from
  the SIGKILL until AILB was ready again, plus a grace), explained by a fault injected in the
  faulty deployment (a stream that deployment cut after its first chunk, or whose server went
  away: nothing can be retried once bytes reached the client), or unexpected.
* Ledger: every served request's id has its row; no id has two; the key's spend equals the
  ledger's cost plus the reservations still open (only those in flight at the kill may be).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Faults after which a client may see a broken stream from the faulty deployment.
CLIENT_VISIBLE_FAULTS = frozenset({"cut_mid_stream", "down"})
KILL_GRACE_S = 2.0  # after AILB is ready again: connections of the old process may still fail


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float
    name: str = ""

    def overlaps(self, start: float, end: float) -> bool:
        return start <= self.end and end >= self.start


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request that failed as the client saw it (times in seconds since the run began)."""

    started: float
    ended: float
    kind: str  # e.g. "http_502:upstream_error", "transport:ConnectError", "stream_error:..."
    deployment: str  # x-ailb-deployment of the answer, "" when there was none
    request_id: str


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds since the run began
    rss_mb: float
    finished: int  # requests finished by then (any outcome)
    segment: int  # 0 before the kill, 1 after the restart


def classify(error: Outcome, kill: Window | None, faults: Sequence[Window], faulty: str) -> str:
    """"kill", "injected" or "unexpected"."""
    if kill is not None and kill.overlaps(error.started, error.ended):
        return "kill"
    if error.deployment == faulty and error.kind.startswith("stream_error") and any(
            w.name in CLIENT_VISIBLE_FAULTS and w.overlaps(error.started, error.ended)
            for w in faults):
        return "injected"
    return "unexpected"


def pooled_slope(points: Iterable[tuple[int, float, float]]) -> float | None:
    """Least-squares slope of y over x shared by every group, each group with its own
    intercept; ``points`` are (group, x, y). None without two distinct x in some group."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for group, x, y in points:
        groups.setdefault(group, []).append((x, y))
    sxy = sxx = 0.0
    for pts in groups.values():
        mx = sum(x for x, _ in pts) / len(pts)
        my = sum(y for _, y in pts) / len(pts)
        sxy += sum((x - mx) * (y - my) for x, y in pts)
        sxx += sum((x - mx) ** 2 for x, _ in pts)
    return sxy / sxx if sxx > 0 else None


def steady(samples: Sequence[Sample], segments: Sequence[Window], warmup_s: float
           ) -> list[Sample]:
    """The samples inside their segment, past its warm-up (at most a quarter of the
    segment)."""
    kept = []
    for sample in samples:
        seg = segments[sample.segment]
        skip = min(warmup_s, (seg.end - seg.start) / 4)
        if seg.start + skip <= sample.at <= seg.end:
            kept.append(sample)
    return kept


def late_half(samples: Sequence[Sample]) -> list[Sample]:
    """The later half of each segment's samples: a slope there well below the whole one
    says the growth is levelling off (warm-up), a slope as steep says it is not."""
    kept = []
    for segment in {s.segment for s in samples}:
        mine = [s for s in samples if s.segment == segment]
        kept += mine[len(mine) // 2:]
    return kept


def rss_slopes(samples: Sequence[Sample]) -> dict[str, float | None]:
    per_hour = pooled_slope((s.segment, s.at / 3600, s.rss_mb) for s in samples)
    per_10k = pooled_slope((s.segment, s.finished / 10_000, s.rss_mb) for s in samples)
    late = pooled_slope((s.segment, s.at / 3600, s.rss_mb) for s in late_half(samples))
    return {"mb_per_hour": per_hour, "mb_per_10k_requests": per_10k,
            "late_half_mb_per_hour": late}


@dataclass
class LedgerFacts:
    rows: int = 0
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    spend_usd: float = 0.0
    open_reservations: int = 0
    open_reservations_usd: float = 0.0
    cost_by_id: dict[str, float] = field(default_factory=dict)


def read_ledger(db_path: Path, key_id: str) -> LedgerFacts:
    """The key's ledger rows, spend and open reservations, read from a stopped AILB's file."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        facts = LedgerFacts()
        statuses: Counter[int] = Counter()
        for request_id, status, cost in db.execute(
                "SELECT request_id, status, cost_usd FROM ledger WHERE key_id = ?", (key_id,)):
            facts.rows += 1
            if request_id in facts.ids:
                facts.duplicates += 1
            facts.ids.add(request_id)
            facts.cost_by_id[request_id] = facts.cost_by_id.get(request_id, 0.0) + cost
            statuses[int(status)] += 1
            facts.cost_usd += cost
        facts.by_status = dict(sorted(statuses.items()))
        (spend,) = db.execute("SELECT COALESCE(SUM(usd), 0) FROM spend WHERE key_id = ?",
                              (key_id,)).fetchone()
        count, usd = db.execute("SELECT COUNT(*), COALESCE(SUM(usd), 0) FROM reservations "
                                "WHERE key_id = ?", (key_id,)).fetchone()
    finally:
        db.close()
    facts.spend_usd, facts.open_reservations, facts.open_reservations_usd = spend, count, usd
    return facts


def served_cost_usd(ledger: LedgerFacts, served_ids: Iterable[str]) -> float:
    return sum(ledger.cost_by_id.get(rid, 0.0) for rid in served_ids)


@dataclass(frozen=True, slots=True)
class Limits:
    clients: int  # requests in flight at the kill, at most
    max_unexpected_errors: int = 0
    max_rss_mb_per_hour: float | None = None  # None: reported, not judged


def verdict(served_ids: Sequence[str], sent: int, classes: Counter[str], ledger: LedgerFacts,
            slopes: dict[str, float | None], restarted: bool, limits: Limits
            ) -> list[tuple[str, bool, str]]:
    """Every check as (name, held, figures)."""
    missing = sum(1 for rid in served_ids if rid not in ledger.ids)
    served_cost = served_cost_usd(ledger, served_ids)
    served = len(served_ids)
    accounted = ledger.cost_usd + ledger.open_reservations_usd
    # float sums over every reservation and settlement: far below the cost of one request
    tolerance = 1e-12 * max(1.0, ledger.spend_usd) * max(1, ledger.rows) + 1e-9
    checks = [
        ("requests were served before and after the kill", served > 0 and restarted,
         f"served {served}, restarted {restarted}"),
        ("ledger rows >= requests served", ledger.rows >= served,
         f"{ledger.rows} rows, {served} served"),
        ("every served request has its ledger row", missing == 0, f"{missing} missing"),
        ("no request has two ledger rows", ledger.duplicates == 0,
         f"{ledger.duplicates} duplicates"),
        ("ledger rows <= requests sent", ledger.rows <= sent, f"{ledger.rows} rows, {sent} sent"),
        ("spend = ledger cost + open reservations", abs(ledger.spend_usd - accounted) <= tolerance,
         f"spend ${ledger.spend_usd:.6f}, ledger ${ledger.cost_usd:.6f} + open "
         f"${ledger.open_reservations_usd:.6f}"),
        ("spend >= cost of the requests served", ledger.spend_usd + tolerance >= served_cost,
         f"spend ${ledger.spend_usd:.6f}, served ${served_cost:.6f}"),
        ("open reservations <= requests in flight at the kill",
         ledger.open_reservations <= limits.clients,
         f"{ledger.open_reservations} open, {limits.clients} clients"),
        ("unexpected client errors within the limit",
         classes["unexpected"] <= limits.max_unexpected_errors,
         f"{classes['unexpected']} unexpected (limit {limits.max_unexpected_errors})"),
    ]
    if limits.max_rss_mb_per_hour is not None:
        slope = slopes["mb_per_hour"]
        checks.append(("RSS slope within the limit",
                       slope is not None and slope <= limits.max_rss_mb_per_hour,
                       f"{slope} MB/h (limit {limits.max_rss_mb_per_hour})"))
    return checks
