"""Files AILB writes for itself: whole, or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ailb.errors import GatewayError


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a sibling temporary file (created 0600, or with the mode of the file it
    replaces), flush it to disk, then rename it over ``path``: a crash leaves the old file or the
    new one, never half of one, and a file with secrets never becomes readable to others."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    temporary = path.with_name(f".{path.name}.new")
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


def write_json(path: Path, value: Any) -> None:
    """Raises GatewayError (500) when the file cannot be written, so that the caller's change
    is refused, not half made."""
    try:
        write_atomically(path, json.dumps(value, indent=2).encode())
    except OSError as exc:
        raise GatewayError(f"cannot save {path}: {exc}") from exc
