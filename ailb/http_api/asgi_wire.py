"""One HTTP exchange on raw ASGI, by the rules Quart and :mod:`ailb.http_api.connection` keep
for every other route, for the fast door (:mod:`ailb.http_api.fast_door`):

* the body is read whole within a limit (``Content-Length`` over it: 413 before any byte is
  read; more bytes than that while reading: 413) and a time (408 when it runs out, counted from
  the first read as Quart's ``BODY_TIMEOUT`` is);
* a client that leaves (ASGI ``http.disconnect``) cancels the request's scope, whether it left
  while its body was being read or while its answer was being made or sent (Quart-Trio cancels
  its request nursery the same way);
* an answer that starts before the body has all arrived drains a small remainder or says
  ``Connection: close`` (:func:`~ailb.http_api.connection.worth_draining`);
* the last body message is sent shielded: Hypercorn recycles or closes the connection inside
  that call (see :mod:`ailb.http_api.connection`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import trio
import trio.lowlevel
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from ailb.http_api.connection import DRAIN_MAX_S, expected_length, says_close, worth_draining
from ailb.http_api.errors import body_timeout, body_too_large

Headers = list[tuple[bytes, bytes]]
_CLOSE: Final = (b"connection", b"close")


class ScopeHeaders:
    """Case-insensitive lookup over an ASGI scope's raw header list (a
    :class:`~ailb.keys.auth.HeaderSource`): the first value of a name, decoded as Latin-1 like
    werkzeug's ``Headers``. The mapping is built on the first lookup."""

    __slots__ = ("_map", "_raw")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._map: dict[str, str] | None = None

    def get(self, key: str) -> str | None:
        found = self._map
        if found is None:
            found = {}
            for name, value in self._raw:
                found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
            self._map = found
        return found.get(key.lower())


def encode_headers(headers: dict[str, str]) -> Headers:
    """Response headers for ASGI, names lowercase (as Quart sends them)."""
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


class Wire:
    """One request's ASGI ``receive`` and ``send``. ``cancel_scope``: the request's scope,
    cancelled when the client leaves. :meth:`watch` must run in a task of that scope once the
    handler no longer reads the body (:meth:`watch_soon` starts it)."""

    __slots__ = ("_nursery", "_receive", "_send", "_watching", "complete", "expected",
                 "received", "started")

    def __init__(self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                 nursery: trio.Nursery) -> None:
        self._receive = receive
        self._send = send
        self._nursery = nursery
        self._watching = False
        self.expected = expected_length(scope["headers"])  # None: chunked
        self.received = 0
        # the whole body arrived (or the client left); read to its end even when no length
        # was given: an HTTP/2 request may send a body without one
        self.complete = False
        self.started = False  # the response's start was sent

    async def read_body(self, limit: int, timeout_s: float) -> bytes:
        """The whole body. Raises PayloadTooLarge (413) beyond ``limit`` bytes, InvalidRequest
        (408) if it has not all arrived within ``timeout_s``; trio.Cancelled if the client
        left."""
        if self.expected is not None and self.expected > limit:
            raise body_too_large()
        chunks: list[bytes] = []
        with trio.move_on_after(timeout_s) as timer:
            while not self.complete:
                data = await self._next()
                if data:
                    if self.received > limit:
                        raise body_too_large()
                    chunks.append(data)
        if timer.cancelled_caught:
            raise body_timeout()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _next(self) -> bytes:
        """The next piece of the body the client sends, counted (b"" for none). A client that
        left cancels the request's scope: raises Cancelled."""
        message = await self._receive()
        if message["type"] == "http.request":
            data = message.get("body", b"")
            self.received += len(data)
            if not message.get("more_body", False):
                self.complete = True
            return data
        if message["type"] == "http.disconnect":
            self.complete = True
            self._nursery.cancel_scope.cancel()
            await trio.lowlevel.checkpoint()  # raises Cancelled
        return b""

    def watch_soon(self) -> None:
        """From now on, read what the client sends: the rest of a body nobody waits for, and
        ``http.disconnect``, which cancels the request. Idempotent."""
        if not self._watching:
            self._watching = True
            self._nursery.start_soon(self._watch)

    async def _watch(self) -> None:
        while True:  # until the client leaves (Cancelled) or the request ends
            await self._next()

    async def start(self, status: int, headers: Headers) -> None:
        """Send the response's start. Before the whole body arrived: first wait a little for a
        small remainder (then the connection is kept), else add ``Connection: close``."""
        if not self.complete:
            headers = await self._drain_or_close(status, headers)
        self.watch_soon()
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def _drain_or_close(self, status: int, headers: Headers) -> Headers:
        if says_close(headers):
            return headers
        if worth_draining(self.expected, self.received, status):
            with trio.move_on_after(DRAIN_MAX_S):
                while not self.complete:
                    await self._next()
            if self.complete:
                return headers
        return [*headers, _CLOSE]

    async def piece(self, data: bytes) -> None:
        """One more piece of the body (not the last)."""
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        """The body's last message, shielded from cancellation (see the module docstring)."""
        with trio.CancelScope(shield=True):
            await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def answer(self, status: int, headers: Headers, body: bytes) -> None:
        """A whole response."""
        await self.start(status, headers)
        await self.end(body)
