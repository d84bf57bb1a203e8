"""The fast door: ``POST /v1/chat/completions`` and ``POST /v1/messages`` answered on raw ASGI.

These two routes carry nearly all of a gateway's traffic, and they use nothing of what Quart
does per request: no request or response object, no context locals, no URL matching, no form
parsing, no ``after_request``. :class:`FastDoors` sits in front of Quart's ASGI application
(Quart's middleware pattern, ``app.asgi_app = FastDoors(app.asgi_app, ...)``) and takes exactly
those two (method, path) pairs; every other request, these paths with another method included
(Quart's 405), goes to Quart unchanged. Quart-Trio stays the application.

A door runs the same :class:`~ailb.pipeline.frame.Frame` and the same step as the Quart route
would (:func:`ailb.http_api.handling.run_request`), with the same answers: the API's error
shape, 413/408 for the body (:class:`~ailb.http_api.asgi_wire.Wire`), AILB's headers on every
answer, the frame closed before a JSON answer is sent, a stream's body closed however the
response ends (which cancels its upstream call when the client leaves mid-stream).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from ailb import logs
from ailb.errors import GatewayError, InternalError
from ailb.http_api.asgi_wire import Headers, ScopeHeaders, Wire, encode_headers
from ailb.http_api.caller import scope_caller
from ailb.http_api.errors import error_body
from ailb.http_api.handling import HandOff, decoded
from ailb.keys.auth import HeaderSource, Principal
from ailb.pipeline.frame import Frame
from ailb.pipeline.hints import route_hints
from ailb.pipeline.notes import error_headers
from ailb.pipeline.request_log import request_id
from ailb.pipeline.services import Services
from ailb.routing.router import Hints

_log = logging.getLogger("ailb.http")
_JSON: Final = (b"content-type", b"application/json")

# a door's own step: the body's JSON object -> a 200 JSON body, or a stream
FastStep = Callable[[Frame, dict[str, Any], Principal, Hints, HeaderSource],
                    Awaitable[bytes | HandOff]]
ASGIApp = Callable[[Any, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Door:
    """A route of the fast door: its step, and its API's error body."""

    step: FastStep
    error_body: Callable[[GatewayError], bytes]


def _json_headers(body: bytes, notes: Headers) -> Headers:
    return [_JSON, (b"content-length", str(len(body)).encode()), *notes]


def _error_headers(body: bytes, notes: Headers) -> Headers:
    return [*notes, _JSON, (b"content-length", str(len(body)).encode())]


class FastDoors:
    """ASGI middleware: the doors by path (POST only), Quart's application for the rest."""

    __slots__ = ("_app", "_doors", "_limit", "_services", "_timeout_s")

    def __init__(self, app: ASGIApp, services: Services, doors: Mapping[str, Door]) -> None:
        server = services.settings.server
        self._app = app
        self._services = services
        self._doors = dict(doors)
        self._limit = server.max_body_bytes  # Quart's MAX_CONTENT_LENGTH
        self._timeout_s = server.body_read_timeout_s  # Quart's BODY_TIMEOUT

    async def __call__(self, scope: Any, receive: ASGIReceiveCallable,
                       send: ASGISendCallable) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            door = self._doors.get(scope["path"])
            if door is not None:
                await self._serve(door, scope, receive, send)
                return
        await self._app(scope, receive, send)

    async def _serve(self, door: Door, scope: HTTPScope, receive: ASGIReceiveCallable,
                     send: ASGISendCallable) -> None:
        headers = ScopeHeaders(scope["headers"])
        async with trio.open_nursery() as nursery:  # cancelled when the client leaves
            wire = Wire(scope, receive, send, nursery)
            try:
                await self._exchange(door, scope, wire, headers)
            except Exception:  # a bug of ours outside the frame: Quart's last-resort 500
                logs.event(_log, "unhandled error", logging.ERROR, error="fast door")
                _log.exception("unhandled error in the fast door")
                if not wire.started:
                    body = error_body(InternalError())
                    await wire.answer(500, _error_headers(body, [
                        (b"x-request-id", request_id(headers).encode())]), body)
            finally:
                nursery.cancel_scope.cancel()  # the watcher

    async def _exchange(self, door: Door, scope: HTTPScope, wire: Wire,
                        headers: ScopeHeaders) -> None:
        frame = Frame(self._services, headers)
        outcome: bytes | HandOff | None = None
        try:
            try:
                principal = frame.open(headers, scope_caller(scope))
                data = await wire.read_body(self._limit, self._timeout_s)
                wire.watch_soon()
                hints = route_hints(headers)
                outcome = await door.step(frame, await decoded(data), principal, hints,
                                          headers)
            except GatewayError as exc:
                body = door.error_body(exc)
                notes = {**error_headers(exc), **await frame.failed(exc)}
                reply = (exc.status, _error_headers(body, encode_headers(notes)), body)
            except Exception:  # a bug of ours: answer 500 under this request's id, and log it
                crash = InternalError()
                body = door.error_body(crash)
                notes = {**error_headers(crash), **frame.crashed()}
                reply = (crash.status, _error_headers(body, encode_headers(notes)), body)
            else:
                if isinstance(outcome, HandOff):
                    frame.hand_off()
                else:  # charged before it leaves: the key's headers are final
                    notes = await frame.succeeded(200)
                    reply = (200, _json_headers(outcome, encode_headers(notes)), outcome)
        finally:
            if not frame.handed_off:
                await frame.close()
        if isinstance(outcome, HandOff):
            await _stream(wire, outcome)
        else:
            await wire.answer(*reply)


async def _stream(wire: Wire, hand_off: HandOff) -> None:
    """Send a stream: one body message per piece. Its body is closed however this ends."""
    body = hand_off.body
    try:
        await wire.start(200, encode_headers(hand_off.headers))
        async for piece in body:
            await wire.piece(piece)
        await wire.end()
    finally:
        with trio.CancelScope(shield=True):
            await body.aclose()
