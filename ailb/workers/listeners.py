"""The listening sockets of a multi-worker instance: bound once by the parent, shared by all.

Every worker accepts from the same kernel queue (the same socket, inherited), so a busy worker
simply accepts less, a restarting worker's share goes to the others, and a port that cannot be
bound is reported once, before any worker starts. ``HTTP_PORT: 0`` works (the parent knows the
port the kernel chose).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ailb.config.schema import ServerSettings

BACKLOG = 1024  # connections the kernel queues while every worker is busy


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (workers get it through ``pass_fds``). Raises OSError (the
    address is in use...)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Hypercorn does
        sock.bind(address)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class Listeners:
    http: socket.socket
    grpc: socket.socket

    @classmethod
    def open(cls, server: ServerSettings) -> Listeners:
        """Bind both ports. Raises OSError; nothing stays open then."""
        http = bind(server.host, server.http_port)
        try:
            return cls(http, bind(server.host, server.grpc_port))
        except BaseException:
            http.close()
            raise

    @property
    def fds(self) -> tuple[int, int]:
        return self.http.fileno(), self.grpc.fileno()

    @property
    def ports(self) -> tuple[int, int]:
        return self.http.getsockname()[1], self.grpc.getsockname()[1]

    def close(self) -> None:
        """The parent's copies. Workers keep serving on theirs until they stop; once the last
        copy is closed, the kernel refuses new connections instead of queueing them."""
        self.http.close()
        self.grpc.close()


def adopt(fd: int) -> socket.socket:
    """A worker's side: the listening socket its parent passed as ``fd``."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock
