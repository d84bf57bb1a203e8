"""``process_*`` series of every process of a multi-worker instance, labelled ``worker``.

A process's CPU time, memory and open files are not values it can share through
prometheus_client's multiprocess files the way counters are: they belong to one process, and
the worker that answers a scrape is any of them. Showing that worker's own (the library's
:class:`ProcessCollector`) made ``process_cpu_seconds_total`` jump from one worker's to
another's between scrapes, and ``rate()`` of it meaningless. Instead, each process of the
instance leaves its pid in the shared metrics directory (``<slot>.pid``: ``w0.pid``,
``w1.pid``... and ``parent.pid``), and whichever worker answers reads every one of them from
``/proc`` (the library's collector, pointed at that pid): one series per process, with
``worker="0"``, ``worker="1"``... and ``worker="parent"``. A worker that has exited has no pid
file (the parent removes it, :func:`forget_pid`) or no ``/proc`` entry: no series.

A single process (no workers) keeps the library's collector as it is, without the label.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from prometheus_client import Metric, ProcessCollector

PID_SUFFIX = ".pid"
PARENT = "parent"  # the slot (and label) of the supervising parent


def write_pid(directory: Path, slot: str) -> None:
    """This process is ``slot`` (``w0``..., or :data:`PARENT`): its pid in ``directory``,
    written whole (a rename), so a scrape never reads half of it. Raises OSError."""
    tmp = directory / f".{slot}{PID_SUFFIX}.tmp"
    tmp.write_text(str(os.getpid()))
    tmp.replace(directory / f"{slot}{PID_SUFFIX}")


def forget_pid(directory: Path, slot: str) -> None:
    """Process ``slot`` has exited: its series stop."""
    (directory / f"{slot}{PID_SUFFIX}").unlink(missing_ok=True)


def _label(slot: str) -> str:
    """``w3`` -> ``3`` (the index every log line of that worker has); ``parent`` stays."""
    return slot[1:] if slot.startswith("w") and slot[1:].isdigit() else slot


class WorkerProcesses:
    """A collector: the ``process_*`` families of every process with a pid file in
    ``directory``, one sample per process, labelled ``worker``."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _pids(self) -> list[tuple[str, str]]:
        found = []
        try:
            paths = sorted(self._directory.glob(f"*{PID_SUFFIX}"))
        except OSError:
            return []
        for path in paths:
            try:
                pid = path.read_text().strip()
            except OSError:
                continue  # removed between the listing and the read: that process has exited
            if pid.isdigit():
                found.append((_label(path.name.removesuffix(PID_SUFFIX)), pid))
        return found

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for label, pid in self._pids():
            # registry=None: not registered anywhere, only read here
            reader = ProcessCollector(pid=partial(str, pid), registry=None)
            for family in reader.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": label},
                                      sample.value)
        return list(families.values())
