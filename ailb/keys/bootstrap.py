"""The admin key: from ``AILB_ADMIN_KEY``, or generated once into the data dir (mode 0600)."""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ailb.config.values import Secret
from ailb.errors import ConfigError

ADMIN_KEY_FILE = "admin.key"


def ensure_admin_key(
    configured: Secret, data_dir: Path
) -> tuple[Secret, Path | None, bool]:
    """The admin key to accept, the file it was read from or written to (None if configured),
    and whether it was generated just now.

    Raises ConfigError when the data dir cannot hold the key file.
    """
    if configured:
        return configured, None, False
    path = data_dir / ADMIN_KEY_FILE
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists():
            key = path.read_text(encoding="utf-8").strip()
            if key:
                return Secret(key), path, False
        key = f"sk-ailb-admin-{secrets.token_urlsafe(32)}"
        # O_EXCL + 0600 from the start: the key is never readable by others, not even briefly.
        if path.exists():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
    except OSError as exc:
        raise ConfigError("AILB_DATA_DIR", f"cannot hold the admin key file {path}: {exc}") \
            from exc
    return Secret(key), path, True


LOCK_FILE = "ailb.lock"


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data dir for this process: a second server on the same data dir, or
    ``ailb keys --local`` writing to the store behind a running server's back, is refused
    (naming the holder's process id, which the lock file holds). The OS releases the lock when
    the process dies, however it dies. Raises ConfigError."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            who = f" (process {holder})" if holder.isdigit() else ""
            raise ConfigError("AILB_DATA_DIR", f"{data_dir} is in use by a running AILB{who} "
                              "(one data dir per server)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)
