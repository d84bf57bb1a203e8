"""One upstream connection: a trio socket (TLS on top for https), opened with the connect
timeout, checked for liveness with one non-blocking peek, and its send and receive with httpx's
exceptions (each carrying the request) for every failure and timeout.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

import httpx
import trio

Key = tuple[str, str, int]  # (scheme, host, port): the pool a connection belongs to
READ_SIZE = 65536


class Connection:
    """An open connection. ``close`` is synchronous and immediate (no TLS close_notify): the
    upstream sees EOF at once, which is what cancellation and errors want."""

    __slots__ = ("_sock", "_tls", "idle_since", "key", "plain", "raw", "stream")

    def __init__(self, key: Key, raw: socket.socket, sock: trio.socket.SocketType,
                 stream: trio.abc.Stream) -> None:
        self.key = key
        self.raw = raw  # the stdlib socket under ``sock``: the synchronous peek and send
        self._sock = sock
        self.stream = stream
        self._tls = stream if isinstance(stream, trio.SSLStream) else None
        self.plain = self._tls is None  # no TLS: bytes go straight to the socket
        self.idle_since = 0.0

    def alive(self) -> bool:
        """True if the idle connection can carry a request: one non-blocking MSG_PEEK recv.
        EOF, stray bytes (a late answer, a TLS alert) or an error all mean it is not.

        What this sees on a TLS connection: bytes after the response that came in the read
        that completed it were seen by the parser (the connection was not reused); bytes,
        EOF or a reset that reach the kernel later are seen by the peek; plaintext already
        decrypted but not handed out, by ``pending()`` (public on trio's SSLStream). What it
        does not see: TLS records trio already pulled from the kernel into its SSLStream's
        incoming buffer but has not decrypted (say a close_notify that came with the last
        record of the response); only a private attribute shows them. A closing upstream's
        FIN usually follows and the peek sees it; if not, the request fails on the dead
        connection: a GET goes again on a fresh one, anything else raises one error, which
        the router's retry policy handles (see ``transport.retryable``)."""
        if self._tls is not None and self._tls.pending():
            return False
        try:
            self.raw.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def close(self) -> None:
        self._sock.close()


async def connect(key: Key, tls: Callable[[], ssl.SSLContext], seconds: float | None,
                  request: httpx.Request) -> Connection:
    """Open a connection to ``key``: the addresses in turn, then the TLS handshake for https.
    Raises httpx.ConnectTimeout or httpx.ConnectError."""
    conn: Connection | None = None
    with trio.CancelScope(deadline=_deadline(seconds)):
        conn = await _open(key, tls, request)
    if conn is None:
        raise httpx.ConnectTimeout("connect timed out", request=request)
    return conn


async def _open(key: Key, tls: Callable[[], ssl.SSLContext], request: httpx.Request
                ) -> Connection:
    scheme, host, port = key
    try:
        raw, sock = await _open_socket(host, port)
    except OSError as exc:
        raise httpx.ConnectError(f"connect failed: {exc}", request=request) from exc
    try:
        stream: trio.abc.Stream = trio.SocketStream(sock)  # sets TCP_NODELAY
        if scheme == "https":
            stream = trio.SSLStream(stream, tls(), server_hostname=host, https_compatible=True)
            await stream.do_handshake()
    except (OSError, trio.BrokenResourceError) as exc:
        sock.close()
        raise httpx.ConnectError(f"TLS handshake failed: {_reason(exc)}", request=request) \
            from exc
    except BaseException:
        sock.close()
        raise
    return Connection(key, raw, sock, stream)


async def _open_socket(host: str, port: int) -> tuple[socket.socket, trio.socket.SocketType]:
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    failure: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in infos:
        raw = socket.socket(family, kind, proto)
        sock = trio.socket.from_stdlib_socket(raw)  # non-blocking from here on
        try:
            await sock.connect(address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return raw, sock
    raise failure


async def send(conn: Connection, data: bytes, seconds: float | None,
               request: httpx.Request) -> None:
    """Send the whole request (head and body in one write). Raises httpx.WriteTimeout or
    httpx.WriteError. Plain http tries one non-blocking send first: a request fits in the
    socket buffer, and then no timer is needed (the caller's receive is the checkpoint)."""
    if conn.plain:
        try:
            sent = conn.raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise httpx.WriteError(f"send failed: {_reason(exc)}", request=request) from exc
        if sent == len(data):
            return
        data = data[sent:]
    with trio.CancelScope(deadline=_deadline(seconds)) as scope:
        try:
            await conn.stream.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpx.WriteError(f"send failed: {_reason(exc)}", request=request) from exc
    if scope.cancelled_caught:
        raise httpx.WriteTimeout("write timed out", request=request)


async def receive(conn: Connection, seconds: float | None, request: httpx.Request
                  ) -> bytes | bytearray:
    """One read (b"" at EOF). Raises httpx.ReadTimeout or httpx.ReadError."""
    if seconds is None:
        try:
            return await conn.stream.receive_some(READ_SIZE)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpx.ReadError(f"receive failed: {_reason(exc)}", request=request) from exc
    with trio.CancelScope(deadline=trio.current_time() + seconds):
        try:
            return await conn.stream.receive_some(READ_SIZE)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpx.ReadError(f"receive failed: {_reason(exc)}", request=request) from exc
    raise httpx.ReadTimeout("read timed out", request=request)


def _deadline(seconds: float | None) -> float:
    return trio.current_time() + seconds if seconds is not None else float("inf")


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return f"{type(cause).__name__}: {cause}"
