"""The body of one response as an ``httpx.AsyncByteStream``: one bytes object per socket read
(all the body pieces that read carried, joined), so events that arrived together stay together.

When the body has been read whole the connection goes back to the pool (or is closed, if the
response said so). Closed before the end, or on any error or cancellation, the connection is
closed at once, never reused: the upstream sees EOF and stops working for nobody.
"""

from __future__ import annotations

import httpx

from ailb.providers.transport.connection import Connection, receive
from ailb.providers.transport.parse import ResponseReader
from ailb.providers.transport.pool import Pool


class ResponseStream(httpx.AsyncByteStream):
    __slots__ = ("_conn", "_first", "_pool", "_reader", "_request", "_timeout")

    def __init__(self, first: bytes, conn: Connection | None, reader: ResponseReader,
                 pool: Pool, request: httpx.Request, timeout: float | None) -> None:
        self._first = first  # body bytes that came with the head
        self._conn = conn  # None once the body is whole (or the stream closed)
        self._reader = reader
        self._pool = pool
        self._request = request
        self._timeout = timeout

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return first
        while self._conn is not None:
            try:
                body = await self._read(self._conn)
            except BaseException:
                self._abort()
                raise
            if body:
                return body
        raise StopAsyncIteration

    async def _read(self, conn: Connection) -> bytes:
        data = await receive(conn, self._timeout, self._request)
        reader = self._reader
        if not data:
            if reader.ends_at_eof():  # the body ran to the end of the connection
                self._conn = None
                self._pool.discard(conn)
                return b""
            raise httpx.RemoteProtocolError(
                "upstream closed the connection before the end of the body",
                request=self._request)
        body = reader.feed(data, self._request)
        if reader.complete:
            self._conn = None
            if reader.keep_alive:
                self._pool.check_in(conn)
            else:
                self._pool.discard(conn)
        return body

    def abort(self) -> None:
        """End the response now, from any task: its connection is closed (a read waiting on it
        fails at once) if the response still holds it; once the body was read whole, the
        connection is the pool's and nothing happens. The response's ``ailb.abort``
        extension (see :mod:`ailb.providers.abort`)."""
        self._first = b""
        self._abort()

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.discard(conn)

    async def aclose(self) -> None:
        """Before the end of the body: close the connection (no checkpoint, so this works
        inside a cancelled scope too)."""
        self._first = b""
        self._abort()
