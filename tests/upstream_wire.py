"""A loopback HTTP/1.1 server on raw trio sockets for the upstream transport tests: each test
says, per request, which bytes go back and whether the connection stays open, and reads what
the server saw (connections, requests, EOFs) without timing anything."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

# answer(stream, head, connection number, request number on it) -> keep the connection open?
Answer = Callable[[trio.abc.Stream, bytes, int, int], Awaitable[bool]]


def response(body: bytes = b"hello", status: bytes = b"200 OK", *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 " + status, b"Content-Type: text/plain", *extra,
            b"Content-Length: " + str(len(body)).encode()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" \
               b"Transfer-Encoding: chunked\r\n\r\n"


async def ok(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
    await stream.send_all(response())
    return True


class Upstream:
    def __init__(self, answer: Answer = ok) -> None:
        self.answer = answer
        self.port = 0
        self.connections = 0
        self.requests: list[bytes] = []  # heads and bodies, in arrival order
        self.eofs = 0  # connections the client closed (EOF seen while waiting for a request)
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        conn, number, buf = self.connections, 0, b""
        self._notify()
        try:
            while True:
                request, buf = await read_request(stream, buf)
                if request is None:
                    self.eofs += 1
                    return
                number += 1
                self.requests.append(request)
                self._notify()
                if not await self.answer(stream, request, conn, number):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.eofs += 1
        finally:
            self._notify()
            await trio.aclose_forcefully(stream)


async def read_request(stream: trio.abc.Stream, buf: bytes) -> tuple[bytes | None, bytes]:
    """One request (head and body) and what followed it; None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return None, buf
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None, b""
        rest += data
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


async def serve(nursery: trio.Nursery, upstream: Upstream, **tls: Any) -> Upstream:
    """Serve ``upstream`` on a free loopback port (TLS with ``ssl_context=``) in ``nursery``."""
    if tls:
        listeners = await nursery.start(partial(
            trio.serve_ssl_over_tcp, upstream.handle, 0, tls["ssl_context"], host="127.0.0.1",
            https_compatible=True))
        upstream.port = listeners[0].transport_listener.socket.getsockname()[1]
    else:
        listeners = await nursery.start(partial(trio.serve_tcp, upstream.handle, 0,
                                                host="127.0.0.1"))
        upstream.port = listeners[0].socket.getsockname()[1]
    return upstream
