"""The frame every API request runs in, whatever door it came through (HTTP or gRPC).

One :class:`Frame` per request, in this order::

    frame = Frame(services, headers)    request id; counted in (drain, in-flight gauge)
    principal = frame.open(h, caller)   refused while draining (503); authenticated (401,
                                        or 429 while the caller's address is throttled)
    ... the door's work ...
    await frame.failed(exc) / frame.crashed() / await frame.succeeded(status)
    await frame.close()                 settle the key's reservations, access log, metrics,
                                        counted out. Exactly once, shielded from cancellation.

A stream's body outlives the door's handler: the door calls :meth:`Frame.hand_off` and the
stream body calls :meth:`close` when it ends. Until a request has an outcome, its status is 499
(the client went away first); a bug of ours is 500 ("internal"), never 499.
"""

from __future__ import annotations

import logging

import trio

from ailb.errors import GatewayError, ShuttingDown, UpstreamError
from ailb.keys.auth import Caller, HeaderSource, Principal
from ailb.pipeline.admission import release, settle
from ailb.pipeline.exchange import Exchange
from ailb.pipeline.notes import ailb_headers
from ailb.pipeline.request_log import request_id
from ailb.pipeline.services import Services
from ailb.telemetry.spans import finish_request, request_trace

_log = logging.getLogger("ailb.request")
GONE = 499  # the client went away before the request had an outcome


class Frame:
    __slots__ = ("_closed", "_handed_off", "error_kind", "exchange", "key_id", "services",
                 "status")

    def __init__(self, services: Services, headers: HeaderSource) -> None:
        self.services = services
        self.exchange = Exchange(request_id(headers))
        if services.tracer is not None:  # off: not even a call
            self.exchange.trace = request_trace(services.tracer, headers)
        self.status = GONE
        self.error_kind = ""  # the error's type (or upstream kind) for the access log
        self.key_id = "-"
        self._closed = False
        self._handed_off = False
        services.drain.enter()
        services.metrics.in_flight.inc()

    def open(self, headers: HeaderSource, caller: Caller) -> Principal:
        """The caller's principal. Raises ShuttingDown (503) while draining, AuthThrottled
        (429) while the caller's address is throttled, AuthenticationFailed (401)."""
        if self.services.drain.draining:
            raise ShuttingDown("AILB is shutting down; retry on another instance.")
        principal = self.services.auth.authenticate(headers, caller)
        self.key_id = principal.key_id
        return principal

    async def succeeded(self, status: int = 200) -> dict[str, str]:
        """The request is answered: its key is charged now (so its headers are final) and the
        response headers are returned (AILB's notes and the key's rate-limit headers)."""
        self.status = status
        return {**ailb_headers(self.exchange),
                **await settle(self.services, self.exchange, status)}

    async def failed(self, exc: GatewayError) -> dict[str, str]:
        """The request failed with ``exc``; returns the headers its error response carries."""
        self.ended(exc.status, exc)
        return {**ailb_headers(self.exchange),
                **await settle(self.services, self.exchange, exc.status)}

    async def settle_before_end(self) -> None:
        """A stream that ends cleanly: its key is charged (and its ledger row acknowledged)
        before the final event leaves, like a JSON answer's before its body."""
        if self.exchange.ticket is not None:
            with trio.CancelScope(shield=True):
                await settle(self.services, self.exchange, self.status)

    def crashed(self) -> dict[str, str]:
        """A bug of ours (call from an ``except`` block: the traceback is logged). 500."""
        _log.exception("unhandled error", extra={"fields": {
            "request_id": self.exchange.request_id}})
        self.status = 500
        self.error_kind = "internal"
        return ailb_headers(self.exchange)

    def ended(self, status: int, exc: GatewayError | None = None) -> None:
        """Record the outcome (status, and the error's kind) without settling: a stream's
        end, before :meth:`close`."""
        self.status = status
        if exc is not None:
            self.error_kind = exc.kind if isinstance(exc, UpstreamError) else exc.type

    def hand_off(self) -> None:
        """The response body (a stream) will call :meth:`close` itself."""
        self._handed_off = True

    @property
    def handed_off(self) -> bool:
        return self._handed_off

    async def close(self) -> None:
        """Settle, log and count the request out. Idempotent; never cancelled half-way.

        Nothing is awaited after the request leaves the drain count: a stream's body closes
        the frame just before the server writes the end of the response, and the supervisor
        stops the servers once the count is zero."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.exchange.ticket is not None:  # only a virtual key's request has one
                with trio.CancelScope(shield=True):
                    await settle(self.services, self.exchange, self.status)
        finally:  # whatever settling did, the request leaves the count
            release(self.services, self.exchange, self.status, self.key_id, self.error_kind)
            if self.exchange.trace is not None:  # after: it must not hold the count
                finish_request(self.exchange.trace, self.exchange, self.status,
                               self.error_kind, self.key_id)
