"""Quart-Trio's per-request ASGI handler, extended so that every exchange ends cleanly.

Three things are added, each where Hypercorn, Quart-Trio and our handlers meet:

* **A stream body is always closed.** Quart closes a response body only once it starts sending
  it. If the client leaves earlier (for example while the status line is being written), the
  body would never be closed and the upstream call, the in-flight counts and the access-log line
  would leak. Handlers therefore attach their stream body to the request, and it is closed when
  the request's task ends, however it ends (closing is idempotent).

* **The response's last message is sent shielded from cancellation.** Hypercorn finishes an
  exchange inside the call that sends the last body message: it tells the application
  ``http.disconnect``, then either recycles the connection for the next request (arming the
  keep-alive idle timer) or shuts the socket. Quart-Trio cancels the request's nursery as soon
  as it reads that ``http.disconnect`` -- while Hypercorn is still inside that call, so its next
  checkpoint was cancelled: the keep-alive timer was never armed after any response (an idle
  connection stayed open until the client left), and a connection that had to be closed
  because its request body was unread stayed open, the next request on it never answered.

* **An early response drains or closes.** A response that starts before the request's body
  has all arrived (401, 404, 405, 408, 413, anything) first waits a little for a small
  remainder of the body (at most ``DRAIN_MAX_BYTES``, ``DRAIN_MAX_S``: Quart reads it and throws
  it away), so the connection can be kept; otherwise it says ``Connection: close``, and
  Hypercorn closes the connection after it. The unread body is never taken for the start of
  the next request.

* **A route may have a body limit of its own.** Quart checks one limit, the app's
  ``MAX_CONTENT_LENGTH`` (``SERVER.max_body_bytes``), in the request's body object as the
  body arrives (``Content-Length`` over it: refused before any byte is read). Setting
  ``request.max_content_length`` in a view is too late: the body object was made with the app's
  limit when the request was. So the request is made here with the limit of the route it
  matches (``app.config[BODY_LIMITS]``: endpoint -> bytes, e.g. RAG uploads); every other route
  keeps the app's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Protocol

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, ASGISendEvent
from quart import Quart
from quart.wrappers import Request
from quart_trio.asgi import TrioASGIHTTPConnection
from werkzeug.exceptions import HTTPException

_ATTRIBUTE = "_ailb_stream_body"

DRAIN_MAX_BYTES: Final = 64 * 1024  # an early response waits for a body remainder this small...
DRAIN_MAX_S: Final = 1.0  # ...this long at most, to keep the connection; else it closes it
_REQUEST_TIMEOUT: Final = 408  # the body did not arrive in time: waiting more is pointless
BODY_LIMITS: Final = "AILB_BODY_LIMITS"  # app.config: {endpoint: bytes}, routes' own limits


class Closable(Protocol):
    async def aclose(self) -> None: ...


def attach_body(request: Any, body: Closable) -> None:
    """Make ``body`` closed when the request ends (``request`` is Quart's request object)."""
    setattr(request, _ATTRIBUTE, body)


def expected_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request body's length from its headers: 0 without a body, None if unknown
    (``Transfer-Encoding: chunked``). h11 has already refused conflicting or malformed ones."""
    length = 0
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = int(value)
    return length


def worth_draining(expected: int | None, received: int, status: int) -> bool:
    """Whether an early response with ``status`` should wait for the rest of a request body of
    ``expected`` bytes (None: unknown) of which ``received`` have arrived, to keep the
    connection. Pure policy."""
    return (status != _REQUEST_TIMEOUT and expected is not None
            and expected - received <= DRAIN_MAX_BYTES)


def says_close(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"connection" and b"close" in value.lower()
               for name, value in headers)


class _BodyProgress:
    """How much of one request's body the application has been handed."""

    def __init__(self, expected: int | None) -> None:
        self.expected = expected
        self.received = 0
        self.done = trio.Event()  # the whole body arrived, or the client left
        if expected == 0:
            self.done.set()

    def note(self, message: ASGIReceiveEvent) -> None:
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.done.set()
        elif message["type"] == "http.disconnect":
            self.done.set()


class ClosingHTTPConnection(TrioASGIHTTPConnection):
    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        progress = _BodyProgress(expected_length(self.scope["headers"]))

        async def tracked_receive() -> ASGIReceiveEvent:
            message = await receive()
            progress.note(message)
            return message

        async def guarded_send(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start" and not progress.done.is_set():
                message = await _drain_or_close(progress, message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                # Hypercorn recycles or closes the connection inside this call (see above)
                with trio.CancelScope(shield=True):
                    await send(message)
                return
            await send(message)

        await super().__call__(tracked_receive, guarded_send)

    def _create_request_from_scope(self, send: ASGISendCallable) -> Request:
        request = super()._create_request_from_scope(send)
        limit = route_body_limit(self.app, request)
        if limit is not None:  # no byte has been received yet: the body object is replaced
            request.body = request.body_class(request.content_length, limit)
            request.max_content_length = limit
        return request

    # Same signature as quart_trio's own override (which differs from Quart's base class).
    async def handle_request(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Any, send: Any
    ) -> None:
        try:
            await super().handle_request(nursery, request, send)
        finally:
            body: Closable | None = getattr(request, _ATTRIBUTE, None)
            if body is not None:
                with trio.CancelScope(shield=True):
                    await body.aclose()


def route_body_limit(app: Quart, request: Request) -> int | None:
    """The body limit of the route ``request`` matches, when it has one of its own."""
    limits: dict[str, int] = app.config.get(BODY_LIMITS) or {}
    adapter = app.create_url_adapter(request) if limits else None
    if adapter is None:
        return None
    try:
        rule, _ = adapter.match(return_rule=True)
    except HTTPException:  # no route, or not this method: the app's limit
        return None
    return limits.get(str(rule.endpoint))


async def _drain_or_close(progress: _BodyProgress, start: Any) -> Any:
    """The response start ``start`` (an ``http.response.start`` message), sent while the body
    has not all arrived: returned as it is once a small remainder arrived within
    ``DRAIN_MAX_S``, else with ``Connection: close`` added."""
    headers = list(start.get("headers", ()))
    if says_close(headers):
        return start
    if worth_draining(progress.expected, progress.received, int(start["status"])):
        with trio.move_on_after(DRAIN_MAX_S):
            await progress.done.wait()
        if progress.done.is_set():
            return start
    return {**start, "headers": [*headers, (b"connection", b"close")]}
