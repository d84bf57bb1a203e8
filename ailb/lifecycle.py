"""What a running AILB can be asked to do (reload, shut down), and what ``run`` reports.

Signals, tests and the gRPC control plane ask through :class:`Lifecycle`. In a worker of a
multi-worker instance, reload and shutdown are the instance's: the worker signals its parent,
which passes them on to every worker.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

import trio

from ailb.pipeline.services import Services
from ailb.routing.runtime_routes import RuntimeRoutes
from ailb.routing.traffic import TrafficWeights
from ailb.runtime import Reloader, Runtime


@dataclass(slots=True)
class Lifecycle:
    """Shutdown and reload, as signals, tests and the gRPC control plane ask for them."""

    reloader: Reloader
    runtime: Runtime
    shutdown: trio.Event = field(default_factory=trio.Event)
    grace_s: float | None = None  # a shutdown's own grace period (gRPC Shutdown)
    parent_pid: int | None = None  # a worker's: reload and shutdown are the instance's

    def request_shutdown(self, grace_s: float | None = None) -> None:
        """Drain and stop; a worker asks its parent, which stops every worker (this one with
        ``grace_s``, the others with theirs)."""
        if grace_s is not None:
            self.grace_s = grace_s
        if not self._tell_parent(signal.SIGTERM):
            self.shutdown.set()

    def reload(self) -> bool:
        """Re-read and apply the configuration, like SIGHUP. False if it was refused. A worker
        reloads at once (to answer) and has its parent reload every worker (itself again)."""
        applied = self.reloader.reload()
        self._tell_parent(signal.SIGHUP)
        return applied

    def _tell_parent(self, signum: int) -> bool:
        if self.parent_pid is None:
            return False
        try:
            os.kill(self.parent_pid, signum)
        except OSError:  # the parent is gone: this worker acts alone
            return False
        return True

    @property
    def routes(self) -> RuntimeRoutes:
        return self.runtime.routes

    @property
    def traffic(self) -> TrafficWeights:
        return self.runtime.traffic

    def apply_routes(self, services: Services) -> None:
        """Swap in a router with the runtime routes as they are now (same path as a reload)."""
        services.router = self.runtime.apply(services.settings)


@dataclass(slots=True)
class Running:
    """What ``run`` reports once it is serving."""

    http_url: str
    grpc_port: int
    services: Services
    lifecycle: Lifecycle

    def request_shutdown(self, grace_s: float | None = None) -> None:
        self.lifecycle.request_shutdown(grace_s)

    def reload(self) -> bool:
        return self.lifecycle.reload()
