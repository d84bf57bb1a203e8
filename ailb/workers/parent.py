"""The parent of a multi-worker instance (``WORKERS`` above 1).

::

    supervise()                           holds the data dir lock; binds HTTP and gRPC once
    ├── ChromaDB server (memory, rag)     only for stores on local disk (CHROMA_URL empty)
    └── Instance.run()
        ├── signal watcher                SIGHUP: forwarded to the workers; SIGTERM/SIGINT: stop
        ├── systemd watchdog              the parent is what systemd watches
        ├── Inbox x N                     each worker's READY=1 (its NOTIFY_SOCKET)
        └── slots
            └── _keep(worker) x N         start worker i; start it again when it exits unasked

Each worker is the program again (``AILB_WORKER=i``, the sockets inherited) running the same
nursery tree as a single process (:func:`ailb.supervisor.run`). The parent serves nothing
itself: it owns the processes. READY=1 goes to systemd once every worker has said it listens.
Stop: SIGTERM to every worker (each drains for ``SERVER.grace_s``), SIGKILL to any left after
that and a margin, then the ChromaDB servers stop; the parent exits 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ailb import logs
from ailb.config.schema import Settings
from ailb.errors import ConfigError
from ailb.keys.bootstrap import data_dir_lock, ensure_admin_key
from ailb.metrics import forget_worker
from ailb.metrics_process import PARENT, write_pid
from ailb.stores.open import open_store
from ailb.supervisor import STREAM_CUT_WAIT_S
from ailb.systemd import Notifier
from ailb.vectors.chroma_server import run_server
from ailb.workers.listeners import Listeners
from ailb.workers.notify import Inbox
from ailb.workers.recent_files import RECENT_DIR
from ailb.workers.role import NOT_INHERITED, WorkerRole, program

_log = logging.getLogger("ailb.workers")
METRICS_DIR = "metrics"  # under the data dir: emptied at each start of the parent
STOP_MARGIN_S = 5.0  # beyond a worker's own drain, before SIGKILL
FIRST_BACKOFF_S = 0.5  # a worker that keeps crashing is started again after 0.5, 1, 2... s
MAX_BACKOFF_S = 30.0
STABLE_S = 30.0  # a worker that served this long had no start-up problem: backoff starts over
CONFIG_EXIT = 2  # cli's exit code for a configuration error


@dataclass(slots=True)
class Worker:
    role: WorkerRole
    inbox: Inbox
    process: trio.Process | None = None
    listening: bool = False  # this run of the worker said READY=1 (it handles signals)
    ever_ready: bool = False
    failures: int = 0  # exits unasked in a row


@dataclass(slots=True)
class Instance:
    settings: Settings
    command: Sequence[str]
    environ: Mapping[str, str]  # the parent's own, for the workers (minus NOT_INHERITED)
    listeners: Listeners
    notifier: Notifier
    workers: list[Worker]
    ports: tuple[int, int]  # HTTP, gRPC (as bound: a port 0 in the settings is known here)
    stop: trio.Event = field(default_factory=trio.Event)
    stopping: bool = False
    failure: ConfigError | None = None
    _ready: int = 0
    _running: int = 0
    _all_exited: trio.Event = field(default_factory=trio.Event)

    async def run(self, handle_signals: bool) -> None:
        """Until stopped. Raises ConfigError when a worker's first start fails on the
        configuration (it printed why), OSError when a notify socket cannot be made."""
        async with trio.open_nursery() as outer:
            if handle_signals:
                outer.start_soon(self._watch_signals)
            outer.start_soon(self.notifier.watchdog_forever)
            for worker in self.workers:
                await worker.inbox.bind()
                outer.start_soon(self._listen, worker)
            async with trio.open_nursery() as slots:
                self._running = len(self.workers)
                for worker in self.workers:
                    slots.start_soon(self._keep, worker)
                await self.stop.wait()
                await self._stop_workers()
            outer.cancel_scope.cancel()
        if self.failure is not None:
            raise self.failure

    async def _stop_workers(self) -> None:
        self.stopping = True
        self.notifier.stopping()
        grace = (self.settings.server.unready_delay_s + self.settings.server.grace_s
                 + STREAM_CUT_WAIT_S + STOP_MARGIN_S)
        logs.event(_log, "stopping the workers", deadline_s=grace)
        self._signal(signal.SIGTERM, only_listening=False)
        self.listeners.close()  # new connections are refused once the workers close theirs
        with trio.move_on_after(grace):
            await self._all_exited.wait()
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                logs.event(_log, "worker still running after the grace period: killed",
                           logging.WARNING, worker=worker.role.index, pid=worker.process.pid)
                worker.process.kill()
        await self._all_exited.wait()

    def _signal(self, signum: int, only_listening: bool) -> None:
        for worker in self.workers:
            process = worker.process
            # a worker that has not said READY=1 may not handle SIGHUP yet (it would die of
            # it); it reads the configuration as it is now anyway
            if process is not None and process.returncode is None and (
                    worker.listening or not only_listening):
                process.send_signal(signum)

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.notifier.reloading()
                    logs.event(_log, "reload: forwarded to the workers")
                    self._signal(signal.SIGHUP, only_listening=True)
                    self.notifier.ready("serving")
                    continue
                logs.event(_log, "shutdown requested", signal=signal.Signals(signum).name)
                self.stop.set()

    async def _listen(self, worker: Worker) -> None:
        while True:
            fields = await worker.inbox.receive()
            if "READY=1" not in fields:
                continue  # RELOADING=1, STOPPING=1, STATUS=: the parent speaks for the instance
            worker.listening = True
            if not worker.ever_ready:
                worker.ever_ready = True
                self._ready += 1
                if self._ready == len(self.workers) and not self.stopping:
                    http, grpc = self.ports
                    logs.event(_log, "all workers are serving", workers=len(self.workers),
                               http_port=http, grpc_port=grpc)
                    self.notifier.ready(f"serving with {len(self.workers)} workers")

    async def _keep(self, worker: Worker) -> None:
        """Run worker ``i`` until the instance stops, starting it again when it exits
        unasked (with a backoff that grows while it keeps failing)."""
        try:
            while not self.stopping:
                code, ran_s = await self._run_once(worker)
                if self.stopping:
                    return
                if code == CONFIG_EXIT and not worker.ever_ready:
                    self.failure = ConfigError(
                        f"worker {worker.role.index}", "stopped at start-up on a configuration "
                        "error (its message is above)")
                    self.stop.set()
                    return
                worker.failures = 1 if ran_s >= STABLE_S else worker.failures + 1
                delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (worker.failures - 1))
                logs.event(_log, "worker exited unasked: starting it again", logging.ERROR,
                           worker=worker.role.index, exit_code=code, ran_s=round(ran_s, 3),
                           restart_in_s=delay)
                with trio.move_on_after(delay):
                    await self.stop.wait()
        finally:
            self._running -= 1
            if self._running == 0:
                self._all_exited.set()

    async def _run_once(self, worker: Worker) -> tuple[int, float]:
        """Start the worker and wait for its exit: (exit code, negative for a signal; seconds
        it ran). Cancelled: it is killed and reaped first."""
        role = worker.role
        env = {k: v for k, v in self.environ.items() if k not in NOT_INHERITED}
        env.update(role.environ(worker.inbox.address))
        worker.listening = False
        started = trio.current_time()
        process = await trio.lowlevel.open_process(
            list(self.command), env=env, pass_fds=self.listeners.fds)
        worker.process = process
        logs.event(_log, "worker started", worker=role.index, pid=process.pid)
        try:
            if self.stopping:  # the stop began while it was being started
                process.send_signal(signal.SIGTERM)
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
            worker.process = None
            worker.listening = False
            forget_worker(role.metrics_dir, role.slot)
        return code, trio.current_time() - started


def _fresh_dir(path: Path) -> Path:
    """An empty directory (what a previous run left there is gone). Raises ConfigError."""
    try:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o700)
    except OSError as exc:
        raise ConfigError("AILB_DATA_DIR", f"cannot hold {path}: {exc}") from exc
    return path


async def supervise(settings: Settings, command: Sequence[str], environ: Mapping[str, str],
                    *, handle_signals: bool = False) -> None:
    """Serve with ``settings.workers`` worker processes (each started as ``command``, see
    :func:`ailb.workers.role.worker_command`) until SIGTERM/SIGINT. Raises
    ConfigError (the data dir, or a worker's configuration at its first start) and OSError
    (a port cannot be bound)."""
    data_dir = settings.data_dir
    with data_dir_lock(data_dir):
        # the one admin key (generated once, here) and the store's migrations, before workers
        # start side by side; they only read the key and open the migrated store
        _, key_file, generated = ensure_admin_key(settings.admin_key, data_dir)
        if generated:
            logs.event(_log, f"admin key generated on first start into {key_file}",
                       logging.WARNING, admin_key_file=str(key_file))
        await (await open_store(settings)).aclose()  # SQLite, or PostgreSQL (DATABASE_URL)
        metrics_dir = _fresh_dir(data_dir / METRICS_DIR)
        write_pid(metrics_dir, PARENT)  # its process_* series, labelled worker="parent"
        _fresh_dir(data_dir / RECENT_DIR)  # the workers' recent requests (recent_files.py)
        listeners = Listeners.open(settings.server)
        try:
            async with trio.open_nursery() as nursery:
                servers: dict[str, str] = {}
                for name, enabled in (("memory", settings.enable_memory),
                                      ("rag", settings.enable_rag)):
                    if enabled and not settings.chroma_url:
                        servers[name] = await nursery.start(run_server, program(),
                                                            data_dir / name)
                http_fd, grpc_fd = listeners.fds
                workers = [Worker(WorkerRole(i, http_fd, grpc_fd, os.getpid(), metrics_dir,
                                             servers), Inbox(f"w{i}"))
                           for i in range(settings.workers)]
                try:
                    await Instance(settings, command, environ, listeners, Notifier(environ),
                                   workers, listeners.ports).run(handle_signals)
                finally:
                    for worker in workers:
                        worker.inbox.close()
                nursery.cancel_scope.cancel()  # the ChromaDB servers stop last
        finally:
            listeners.close()
    logs.event(_log, "AILB stopped")
