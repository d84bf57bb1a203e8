"""Every worker's recent requests, for whichever worker answers ``GET /admin/requests/recent``.

Each worker keeps its ring in memory (:mod:`ailb.pipeline.recent`) and, at most once a second
and only when it changed, writes it whole to ``<data dir>/recent/w<i>.json`` (a temporary file
renamed over the old one, so a reader never sees half a file), in a worker thread. The answering
worker reads every file (also in a thread) and merges them with its own ring, newest first. The
parent empties the directory at each start, like the metrics directory: it holds one run's
requests. A list may lag another worker's requests by up to a second.

Why files: the ring is small (at most 500 entries, ~100 KB), it is per run and disposable, and
the workers already share a directory; the store would cost a write per request, and asking the
other workers directly would need a channel between them that does not exist.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import trio

from ailb import logs
from ailb.pipeline.recent import Recent, RecentRequests, shown

RECENT_DIR: Final = "recent"  # under the data dir: emptied at each start of the parent
INTERVAL_S: Final = 1.0
_log = logging.getLogger("ailb.workers")


@dataclass(frozen=True, slots=True)
class RecentFiles:
    """Where the workers' rings are shared, and this worker's file in it."""

    directory: Path
    slot: str  # the worker's stable name (WorkerRole.slot)

    @property
    def own(self) -> Path:
        return self.directory / f"{self.slot}.json"


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _read_all(directory: Path) -> list[Recent]:
    """Every worker's shared entries; a file that vanished or is unreadable is skipped."""
    out: list[Recent] = []
    for path in sorted(directory.glob("*.json")):
        try:
            out.extend(msgspec.json.decode(path.read_bytes(), type=list[Recent]))
        except (OSError, msgspec.DecodeError):
            continue
    return out


async def share_forever(ring: RecentRequests, files: RecentFiles,
                        interval_s: float = INTERVAL_S) -> None:
    """Write the ring to this worker's file whenever it changed, at most every
    ``interval_s``. Runs until cancelled."""
    written = 0  # an empty ring is not written: a restarted worker's old file stays till then
    while True:
        await trio.sleep(interval_s)
        version = ring.version
        if version == written:
            continue
        data = msgspec.json.encode(ring.entries())
        try:
            await trio.to_thread.run_sync(_write, files.own, data)
        except OSError as exc:
            logs.event(_log, "cannot share the recent requests", logging.WARNING,
                       path=str(files.own), error=str(exc))
        written = version


async def every_worker(ring: RecentRequests, files: RecentFiles | None,
                       limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` recent requests of every worker (this one's from memory), newest
    first."""
    if files is None:
        return ring.latest(limit)
    shared = await trio.to_thread.run_sync(_read_all, files.directory)
    return shown([*ring.entries(), *shared], limit)
