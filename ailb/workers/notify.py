"""The parent's side of systemd's notify protocol: one datagram socket per worker slot.

A worker runs the same :class:`ailb.systemd.Notifier` as a single process, with
``NOTIFY_SOCKET`` naming its slot's socket here instead of systemd's: its ``READY=1`` tells the
parent it listens, and the parent tells systemd once every worker does. One socket per slot
(rather than one shared socket and the sender's credentials) because under the one-file binary
the process that sends may be a child of the process the parent started.
"""

from __future__ import annotations

import os
import secrets
import socket

import trio

MAX_DATAGRAM = 4096


class Inbox:
    """A datagram socket in Linux's abstract namespace (no file to create or clean up; the name
    is random, so nothing else sends to it by accident). Close it with :meth:`close`."""

    def __init__(self, name: str) -> None:
        self.address = f"@ailb-{os.getpid()}-{secrets.token_hex(6)}-{name}"
        self._sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        except OSError:
            pass  # the default buffer is fine too
        self._bound = False

    async def bind(self) -> None:
        """Raises OSError."""
        await self._sock.bind("\0" + self.address[1:])
        self._bound = True

    async def receive(self) -> set[str]:
        """The fields of the next message (``READY=1``, ``STATUS=...``)."""
        data = await self._sock.recv(MAX_DATAGRAM)
        return set(data.decode("utf-8", "replace").split("\n"))

    def close(self) -> None:
        self._sock.close()
