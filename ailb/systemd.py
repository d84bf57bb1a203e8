"""systemd's notify protocol (``Type=notify``): one datagram per state change to the Unix socket
named by ``NOTIFY_SOCKET``, and ``WATCHDOG=1`` at half the ``WATCHDOG_USEC`` period.

Standard library only: the protocol is one datagram. Without ``NOTIFY_SOCKET`` every call does
nothing, so the same binary runs under systemd, in a container or by hand.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping

import trio

from ailb import logs

_log = logging.getLogger("ailb.systemd")


class Notifier:
    def __init__(self, environ: Mapping[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # "@name" is Linux's abstract namespace: the address starts with a NUL byte
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        # The one-file binary runs under PyInstaller's bootloader, which is systemd's main
        # process (MAINPID, hence WATCHDOG_PID); this process is its child.
        frozen_child = getattr(sys, "frozen", False) and pid == str(os.getppid())
        mine = not pid or pid == str(os.getpid()) or frozen_child
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *fields: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:  # systemd went away: nothing to tell, nothing to fail for
            logs.event(_log, "sd_notify failed", logging.WARNING, error=str(exc))

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    async def watchdog_forever(self) -> None:
        """Ping at half the watchdog period, from the event loop: a wedged loop stops the
        pings and systemd restarts the service."""
        if self.watchdog_s is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_s / 2)
