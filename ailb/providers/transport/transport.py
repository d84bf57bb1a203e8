"""The lean upstream transport: HTTP/1.1 on trio sockets with httptools' C parser, under httpx.

httpx stays the API (clients, timeouts, content decoding, MockTransport in tests); this replaces
only httpcore's connection pool and its pure-Python h11, which cost a ``poll`` per pooled
connection per request. The request (head and body) goes out in one write; the response head
is parsed from the first reads and the body streams as :class:`ResponseStream`.

A request goes once more on a fresh connection only when a reused connection (one the upstream
may have closed while it sat idle) fails in a way that cannot have cost a second generation, as
Go's net/http decides (see :func:`retryable`): the send itself failed (the upstream took no
whole request), or the request is idempotent (GET, HEAD, OPTIONS: health probes) and EOF or a
reset came before any byte of the answer. A POST whose request was written whole is never sent
again by the transport: the upstream may have read and processed it before it closed (a
duplicate generation, billed twice); it fails with httpx's error (``RemoteProtocolError``
"server disconnected without sending a response", or ``ReadError``), as httpcore's would, and
the router's retry policy decides. Never after a byte of the answer, never for a fresh
connection. The peek before a connection is handed out (``Connection.alive``) is the main
defence against connections closed while idle.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from ailb.providers.transport import connection
from ailb.providers.transport.connection import Connection, Key
from ailb.providers.transport.parse import ResponseReader
from ailb.providers.transport.pool import KEEPALIVE_S, Pool
from ailb.providers.transport.stream import ResponseStream

_PORTS = {"http": 80, "https": 443}
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class _Stale(Exception):
    """A reused connection failed where sending the request again is safe (:func:`retryable`)."""


class LeanTransport(httpx.AsyncBaseTransport):
    """One per client (deployment). ``verify`` as httpx's (True: certifi's CA bundle)."""

    def __init__(self, max_connections: int = 100, *, keepalive_s: float = KEEPALIVE_S,
                 verify: ssl.SSLContext | bool = True) -> None:
        self.pool = Pool(max_connections, keepalive_s)
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:  # made on the first https connection: plain http never loads it
            self._ssl = (self._verify if isinstance(self._verify, ssl.SSLContext)
                         else httpx.create_ssl_context(verify=self._verify, trust_env=False))
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}",
                                            request=request)
        key: Key = (scheme, url.raw_host.decode("ascii"), url.port or _PORTS[scheme])
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        payload = _head(request) + await request.aread()
        pool = self.pool
        await pool.acquire(timeouts.get("pool"), request)
        try:
            conn = pool.take_idle(key)
            if conn is not None:
                try:
                    return await self._exchange(conn, payload, request, timeouts, reused=True)
                except _Stale:
                    pass  # the connection is closed; the request goes on a fresh one
            pool.make_room()
            try:
                conn = await connection.connect(key, self._ssl_context,
                                                timeouts.get("connect"), request)
            except BaseException:
                pool.not_opened()
                raise
            if not pool.opened(conn):
                raise httpx.ConnectError("the upstream client was closed", request=request)
            return await self._exchange(conn, payload, request, timeouts, reused=False)
        except BaseException:
            pool.release()  # no response holds the permit
            raise

    async def _exchange(self, conn: Connection, payload: bytes, request: httpx.Request,
                        timeouts: dict[str, Any], *, reused: bool) -> httpx.Response:
        """Send the request on ``conn`` and read the response head. On any failure the
        connection is closed (the permit stays with the caller); on success the permit goes
        to the response (or back to the pool, when the head brought the whole body)."""
        reader = ResponseReader(head_only=request.method == "HEAD")
        read_timeout = timeouts.get("read")
        try:
            try:
                await connection.send(conn, payload, timeouts.get("write"), request)
            except httpx.WriteError:
                if retryable(request.method, reused=reused, sent=False, answered=False):
                    raise _Stale() from None
                raise
            first = b""
            answered = False  # a byte of the answer arrived: never send the request again
            while not reader.headers_done:
                try:
                    data = await connection.receive(conn, read_timeout, request)
                except httpx.ReadError:
                    if retryable(request.method, reused=reused, sent=True, answered=answered):
                        raise _Stale() from None
                    raise
                if not data:
                    if retryable(request.method, reused=reused, sent=True, answered=answered):
                        raise _Stale()
                    raise httpx.RemoteProtocolError(
                        "server disconnected without sending a response" if not answered
                        else "upstream closed the connection within the response head",
                        request=request)
                answered = True
                first = reader.feed(data, request)
        except BaseException:
            self.pool.forget(conn)
            raise
        owner: Connection | None = conn
        if reader.complete:
            owner = None
            if reader.keep_alive:
                self.pool.check_in(conn)
            else:
                self.pool.discard(conn)
        stream = ResponseStream(first, owner, reader, self.pool, request, read_timeout)
        return httpx.Response(
            reader.status, headers=reader.headers, stream=stream,
            extensions={"http_version": reader.http_version, "reason_phrase": reader.reason,
                        "ailb.abort": stream.abort})

    async def aclose(self) -> None:
        self.pool.close()


def retryable(method: str, *, reused: bool, sent: bool, answered: bool) -> bool:
    """May a request whose connection failed go once more on a fresh one? Only on a reused
    connection (a fresh one that fails says the upstream is failing) and before any byte of
    the answer; then when the send itself failed (the upstream took no whole request, so it
    cannot have acted on it), or for an idempotent method (sending it twice is harmless)."""
    if not reused or answered:
        return False
    return not sent or method in _IDEMPOTENT


def _head(request: httpx.Request) -> bytes:
    """The request line and headers, as httpx set them (Host, Content-Length, ...)."""
    raw = request.headers.raw
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    if head.count(b"\n") != len(raw) + 2 or head.count(b"\r") != len(raw) + 2:
        raise httpx.LocalProtocolError("line break in a request header", request=request)
    return head
