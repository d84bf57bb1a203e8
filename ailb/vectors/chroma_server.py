"""ChromaDB's own server for a local store, when several worker processes need it.

A local ChromaDB store (``AILB_DATA_DIR/memory``, ``/rag``) may be opened by one process only.
With ``WORKERS`` above 1 the parent runs ChromaDB's server (the Rust one that ``chroma run``
starts, from the ``chromadb_rust_bindings`` extension that chromadb itself ships) on loopback
over the same folder, and the workers talk to it over HTTP: the files on disk are the same as
with one process, so switching between 1 and N workers keeps every memory and collection.

The server runs in a child process that is AILB's own program again (``ailb _chroma-server``),
so the one-file binary needs nothing else. :func:`serve` is that child; :func:`run_server` is
the parent's task that starts it, waits until it answers, and stops it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio

from ailb import logs
from ailb.errors import ConfigError

_log = logging.getLogger("ailb.vectors")
COMMAND = "_chroma-server"
START_TIMEOUT_S = 60.0
STOP_WAIT_S = 10.0
PARENT_POLL_S = 1.0


def serve(args: Sequence[str]) -> int:
    """The child: ``--path P --port N``. Blocks until SIGTERM (exit 0), or until the parent
    is gone (the server must not outlive the instance that owns its data dir)."""
    parent = os.getppid()

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)  # the server's own graceful stop

    threading.Thread(target=watch_parent, daemon=True).start()
    import chromadb_rust_bindings  # type: ignore[import-untyped]  # ships inside chromadb

    try:
        chromadb_rust_bindings.cli(["chroma", "run", "--host", "127.0.0.1", *args])
    except KeyboardInterrupt:
        pass
    return 0


def _free_port() -> int:
    # The server takes a port number, not a socket: a free one is picked, and a start that
    # loses the port to someone else in between is retried by the caller.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _answers(url: str, process: trio.Process) -> bool:
    """True once the server's heartbeat answers; False if the process exits first."""
    import httpx  # here: the command line imports this module to dispatch the server's child

    async with httpx.AsyncClient(timeout=1) as http:
        with trio.move_on_after(START_TIMEOUT_S):
            while process.returncode is None:
                try:
                    if (await http.get(f"{url}/api/v2/heartbeat")).status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)
    return False


async def run_server(program: Sequence[str], path: Path, *,
                     task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a ChromaDB server over ``path`` until cancelled; reports its URL once it answers.
    ``program`` is how to run AILB again (the binary, or ``python -m ailb``). Raises
    ConfigError when it does not start. Stopping (cancelled): SIGTERM, then SIGKILL."""
    await trio.to_thread.run_sync(partial(path.mkdir, parents=True, exist_ok=True))
    for _ in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        # Its own process group: a Ctrl-C in the terminal must not stop it before the workers
        # that write to it have drained. The parent stops it last.
        process = await trio.lowlevel.open_process(
            [*program, COMMAND, "--path", str(path), "--port", str(port)],
            stdout=subprocess.DEVNULL, process_group=0)  # its banner; errors go to stderr
        try:
            if await _answers(url, process):
                logs.event(_log, "ChromaDB server started for the workers", path=str(path),
                           url=url, pid=process.pid)
                task_status.started(url)
                await process.wait()
                raise ConfigError(str(path), f"ChromaDB's server stopped (exit code "
                                  f"{process.returncode})")
        finally:
            if process.returncode is None:
                process.terminate()
                with trio.CancelScope(shield=True), trio.move_on_after(STOP_WAIT_S):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    with trio.CancelScope(shield=True):
                        await process.wait()
    raise ConfigError(str(path), "ChromaDB's server did not start for the workers (see its "
                      "messages above); set CHROMA_URL to a ChromaDB server, or WORKERS: 1")

