"""Files AILB writes for itself: whole, or not at all.

:func:`write_atomically` blocks (it waits for the disk twice); it is for start-up, before AILB
serves. While serving, the ``*_in_thread`` variants run it in a worker thread so that the event
loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import trio

from ailb.errors import GatewayError


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a sibling temporary file (created 0600, or with the mode of the file it
    replaces), flush it to disk, then rename it over ``path``: a crash leaves the old file or the
    new one, never half of one, and a file with secrets never becomes readable to others."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    # the writer's pid in the name: worker processes of one instance may write the same file
    temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself
    finally:
        os.close(directory)


async def write_atomically_in_thread(path: Path, data: bytes) -> None:
    """:func:`write_atomically` in a worker thread. Raises OSError. Not cancellable once
    started: the caller waits for the file to be whole (old or new) either way."""
    await trio.to_thread.run_sync(write_atomically, path, data)


async def write_json_in_thread(path: Path, value: Any) -> None:
    """``value`` as indented JSON, written atomically in a worker thread. Raises GatewayError
    (500) when the file cannot be written, so that the caller's change is refused, not half
    made."""
    data = json.dumps(value, indent=2).encode()
    try:
        await write_atomically_in_thread(path, data)
    except OSError as exc:
        raise GatewayError(f"cannot save {path}: {exc}") from exc
