"""Start, pin, wait for and stop the benchmark's child processes (loopback only)."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


class BenchError(RuntimeError):
    """A target could not be started or answered wrongly; the message says what happened."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        self.log_file.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin_to(core: int) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, {core})

    return pin


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    core: int | None,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Child:
    """Start ``argv`` in its own session (so that Ctrl-C reaches only us), pinned to ``core``."""
    cmd = list(argv)
    preexec: Callable[[], None] | None = None
    if core is not None:
        taskset = shutil.which("taskset")
        if taskset:
            cmd = [taskset, "-c", str(core), *cmd]
        else:
            preexec = _pin_to(core)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=preexec,  # only when taskset is missing; no threads exist yet
    )
    return Child(name=name, proc=proc, log_path=log_path, log_file=log_file)


def stop(child: Child, timeout: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after ``timeout``."""
    proc = child.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    # Workers of the group (nginx) may outlive a master killed hard: sweep the group once more.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    child.log_file.close()


def http_get(port: int, path: str, timeout: float = 2.0,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One GET to 127.0.0.1 (no proxy, whatever the environment says)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_post(port: int, path: str, body: bytes, headers: dict[str, str],
              timeout: float = 10.0) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


def wait_http_ok(child: Child, port: int, path: str, timeout: float) -> None:
    """Poll ``GET path`` until 200; fail early if the child exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        code = child.proc.poll()
        if code is not None:
            raise BenchError(
                f"{child.name} exited with code {code} before it was ready; "
                f"log {child.log_path}:\n{child.log_tail()}"
            )
        try:
            status, body = http_get(port, path, timeout=1.0)
            if status == 200:
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise BenchError(
        f"{child.name} not ready after {timeout:.0f}s on GET {path} ({last}); "
        f"log {child.log_path}:\n{child.log_tail()}"
    )


def child_env(extra: dict[str, str] | None = None, strip: Sequence[str] = ()) -> dict[str, str]:
    """This environment minus ``strip`` keys, with loopback excluded from any proxy."""
    env = {k: v for k, v in os.environ.items() if k not in set(strip)}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env
