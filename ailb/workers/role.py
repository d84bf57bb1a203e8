"""What a worker process is told by its parent, through its environment.

The parent (:mod:`ailb.workers.parent`) starts each worker by running the same program again
with these variables set; :func:`WorkerRole.from_environ` reads them back in the worker. Both
sides use this one module, so the names cannot drift apart. Pure: no I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ailb.errors import ConfigError

WORKER_ENV: Final = "AILB_WORKER"  # the worker's index: 0, 1, ...
HTTP_FD_ENV: Final = "AILB_HTTP_FD"  # the listening sockets, inherited (bound by the parent)
GRPC_FD_ENV: Final = "AILB_GRPC_FD"
PARENT_ENV: Final = "AILB_PARENT_PID"  # where instance-wide requests (reload, shutdown) go
# ChromaDB servers the parent runs for the data dir's stores (``memory``, ``rag``), as
# ``memory=http://127.0.0.1:P,rag=...``: one process may open a local store, not several.
VECTORS_ENV: Final = "AILB_VECTOR_SERVERS"
# prometheus_client's own variable (read when it is imported): see ailb.metrics
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# Variables of the parent's own environment a worker must not see: systemd's (the parent
# speaks to systemd; a worker's NOTIFY_SOCKET is the parent's), and the other process roles'.
NOT_INHERITED: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                        "LISTEN_PID", "LISTEN_FDNAMES", MULTIPROC_ENV, WORKER_ENV,
                        HTTP_FD_ENV, GRPC_FD_ENV, PARENT_ENV, VECTORS_ENV)


@dataclass(frozen=True, slots=True)
class WorkerRole:
    index: int
    http_fd: int
    grpc_fd: int
    parent_pid: int
    metrics_dir: Path
    vector_servers: Mapping[str, str] = field(default_factory=dict)

    @property
    def slot(self) -> str:
        """The worker's stable name: the same for every restart of worker ``index``."""
        return f"w{self.index}"

    def environ(self, notify_socket: str) -> dict[str, str]:
        """The variables that make a process this worker (added to the parent's environment
        minus :data:`NOT_INHERITED`)."""
        return {
            WORKER_ENV: str(self.index),
            HTTP_FD_ENV: str(self.http_fd),
            GRPC_FD_ENV: str(self.grpc_fd),
            PARENT_ENV: str(self.parent_pid),
            MULTIPROC_ENV: str(self.metrics_dir),
            VECTORS_ENV: ",".join(f"{k}={v}" for k, v in sorted(self.vector_servers.items())),
            "NOTIFY_SOCKET": notify_socket,
        }

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WorkerRole | None:
        """This process's role, or None when it is not a worker. Raises ConfigError when the
        variables are malformed (set by hand, not by a parent)."""
        if WORKER_ENV not in environ:
            return None
        try:
            servers = dict(item.split("=", 1) for item in
                           environ.get(VECTORS_ENV, "").split(",") if item)
            return cls(int(environ[WORKER_ENV]), int(environ[HTTP_FD_ENV]),
                       int(environ[GRPC_FD_ENV]), int(environ[PARENT_ENV]),
                       Path(environ[MULTIPROC_ENV]), servers)
        except (KeyError, ValueError) as exc:
            raise ConfigError(WORKER_ENV, f"is set, but the worker's other variables are not "
                              f"usable ({exc}); it is set by `ailb --workers N` for its "
                              "workers only") from None


def program() -> list[str]:
    """How to run AILB again: the one-file binary is ``sys.executable`` itself (PyInstaller's
    bootloader lets a child of the program reuse the files it unpacked)."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "ailb"]


def worker_command(config_path: Path | None, workers: int) -> list[str]:
    """A worker's command line: the same program and configuration file as its parent's
    (absolute: the file is found whatever the worker's working directory), and the number of
    workers (a worker shares its keys' limits with the others, and an outage's share is
    counted with it), whether it came from the file, the variable or the flag."""
    return [*program(), *(["--config", str(config_path.absolute())] if config_path else []),
            "--workers", str(workers), "run"]
