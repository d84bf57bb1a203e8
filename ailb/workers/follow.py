"""A worker follows the runtime changes made through the other workers.

The gRPC control plane (MarchProxy) reaches one worker per call; that worker writes the change
to its file in the data dir (``routes.json``, ``rate_limits.json``, ``traffic.json``, always by
an atomic rename) and applies it. Every worker looks at those files' identity (inode, mtime,
size) every :data:`POLL_S`, off the event loop, and takes a file that changed; a change it made
itself compares equal to what it has and does nothing. Two changes made at the same moment
through two workers: the later file wins in every worker (the same rule as one process).

The same loop notices a parent that has gone (this process was re-parented): the worker then
drains and stops rather than serve unsupervised.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import trio

from ailb import logs
from ailb.errors import ConfigError
from ailb.lifecycle import Lifecycle
from ailb.pipeline.services import Services

_log = logging.getLogger("ailb.workers")
POLL_S = 0.5
Stamp = tuple[int, int, int] | None


def _stamps(paths: Sequence[Path]) -> list[Stamp]:
    stamps: list[Stamp] = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            stamps.append(None)
        else:
            stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
    return stamps


async def follow_state_files(services: Services, lifecycle: Lifecycle) -> None:
    """Until cancelled (or the parent is gone)."""
    parent = os.getppid()
    limits = services.runtime_limits
    paths = [lifecycle.routes.path, lifecycle.traffic.path, limits.path]
    # nothing seen yet: the first look reads every file that exists, so a change written
    # between this worker loading its state and its first look is not missed (a file equal to
    # what is live changes nothing)
    seen: list[Stamp] = [None] * len(paths)
    while True:
        await trio.sleep(POLL_S)
        if os.getppid() != parent:
            logs.event(_log, "the parent process is gone: this worker stops", logging.ERROR)
            lifecycle.shutdown.set()
            return
        now = await trio.to_thread.run_sync(_stamps, paths)
        routes_changed, traffic_changed, limits_changed = (
            new != old for new, old in zip(now, seen, strict=True))
        seen = now
        try:
            reroute = routes_changed and await lifecycle.routes.refresh()
            reroute = (traffic_changed and await lifecycle.traffic.refresh()) or reroute
            if limits_changed and await limits.refresh(trio.current_time()):
                logs.event(_log, "runtime rate limits changed by another worker: applied")
        except ConfigError as exc:  # written by hand, badly: keep what is live
            logs.event(_log, "a runtime state file cannot be read: the live state stays",
                       logging.ERROR, error=str(exc))
            continue
        if reroute:
            lifecycle.apply_routes(services)
            logs.event(_log, "runtime routes or traffic weights changed by another worker: "
                       "applied")
