"""CPU time and peak memory of a process tree, read from /proc (Linux only)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    tree = _children_map()
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its descendants, all threads (live and exited) included.

    /proc/PID/stat of a thread-group leader sums every thread of the process; cutime/cstime
    add children that were already reaped.
    """
    total = 0
    for i, p in enumerate(process_tree(pid)):
        fields = _stat_fields(p)
        if fields is None:
            continue
        # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17 (1-based).
        total += int(fields[11]) + int(fields[12])
        if i == 0:
            total += int(fields[13]) + int(fields[14])
    return total / _TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True, slots=True)
class Memory:
    peak_rss_kib: int  # VmHWM of the main process
    tree_peak_rss_kib: int  # sum of VmHWM over the process tree


def peak_rss(pid: int) -> Memory:
    main = _status_kib(pid, "VmHWM")
    tree = sum(_status_kib(p, "VmHWM") for p in process_tree(pid))
    return Memory(peak_rss_kib=main, tree_peak_rss_kib=tree)


def self_cpu_seconds() -> float:
    """CPU time of this (load-generator) process, all threads."""
    t = os.times()
    return t.user + t.system


def system_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine (all CPUs), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def wait_idle(pid: int, step_s: float = 0.1, quiet_steps: int = 2, timeout_s: float = 60.0
              ) -> float:
    """Wait until ``pid``'s tree used at most one clock tick of CPU in each of ``quiet_steps``
    consecutive steps of ``step_s`` (work it deferred, e.g. AILB's memory writer, is done);
    returns the seconds waited (``timeout_s`` at most)."""
    started = time.monotonic()
    last, quiet = cpu_seconds(pid), 0
    while quiet < quiet_steps and time.monotonic() - started < timeout_s:
        time.sleep(step_s)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last <= 1.0 / _TICKS + 1e-9 else 0
        last = now
    return time.monotonic() - started
