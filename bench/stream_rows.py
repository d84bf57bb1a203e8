"""The stream rows beyond the main table: CPU per streamed event (stream_cost.py) and the
paced-stream capacity (capacity.py), measured on the live targets after the table, printed,
and rendered as Markdown for docs/benchmarks.md."""

from __future__ import annotations

import os
from typing import Any

import capacity
import report
import stream_cost
import targets


def measure(live: list[targets.Target], warmup: float, seconds: float, rounds: int,
            notes: list[str]) -> dict[str, Any]:
    """The per-event CPU row (stream_cost.py) and the paced capacity row (capacity.py)."""
    extra: dict[str, Any] = {}
    if os.environ.get("BENCH_STREAM_COST") != "0":
        conc = int(os.environ.get("BENCH_STREAM_COST_CONC", 16))
        print(f"\nCPU per streamed event: streams of {stream_cost.SHORT} and "
              f"{stream_cost.LONG} events at c={conc}", flush=True)
        extra["stream_cost"] = stream_cost.measure(live, conc, warmup, seconds, rounds)
    if os.environ.get("BENCH_CAPACITY") != "0":
        print(f"\npaced-stream capacity ({capacity.GAP_MS:g} ms between events)", flush=True)
        found, steps, cap_notes = capacity.measure(live)
        extra["capacity"] = (found, steps)
        notes.extend(cap_notes)
    return extra


def report_all(extra: dict[str, Any]) -> str:
    """Print the per-event and capacity tables; return them as Markdown for the docs."""
    md = ""
    if costs := extra.get("stream_cost"):
        table = stream_cost.rows(costs)
        print("\nCPU per streamed event (slope between the two stream lengths):")
        print(report.text_table(stream_cost.COLUMNS, table))
        md += ("CPU per streamed event (`bench/stream_cost.py`), streams of "
               f"{stream_cost.SHORT} and {stream_cost.LONG} events:\n\n"
               + report.md_table(stream_cost.COLUMNS, table) + "\n\n")
    if "capacity" in extra:
        found, steps = extra["capacity"]
        table = capacity.rows(steps)
        print(f"\nPaced-stream capacity ({capacity.GAP_MS:g} ms between events): "
              + capacity.summary(found))
        print(report.text_table(capacity.COLUMNS, table))
        md += (f"Paced-stream capacity (`bench/capacity.py`, {capacity.GAP_MS:g} ms between "
               f"events): **{capacity.summary(found)}**\n\n"
               + report.md_table(capacity.COLUMNS, table) + "\n\n")
    return md


def as_json(extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "stream_cost" in extra:
        out["stream_cost"] = stream_cost.as_json(extra["stream_cost"])
    if "capacity" in extra:
        out["capacity"] = capacity.as_json(*extra["capacity"])
    return out
