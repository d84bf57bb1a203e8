"""Hypercorn's own answer to a request it cannot parse, in the API's error shape.

When h11 refuses a request (a header section over ``h11_max_incomplete_size``: 431; a malformed
request line, header or chunk: 400), Hypercorn answers by itself, before any application code
runs, in ``H11Protocol._send_error_response``: the status line, ``Connection: close`` and an
empty body. Hypercorn has no setting or hook for that answer, and the protocol class it builds
for each connection is fixed inside Hypercorn, so a subclass could not be put in its place
without patching as well. This module therefore replaces that one method, and only it, with one
that sends the same status line and ``Connection: close`` with a JSON error body. The
replacement is installed by :func:`install` when the server starts (never on import);
``tests/test_connection_hygiene.py`` pins the behaviour, so a Hypercorn release that moves the
method fails a test instead of silently sending empty bodies again.
"""

from __future__ import annotations

import json
from itertools import chain

import h11
from hypercorn.protocol.h11 import H11Protocol

from ailb.http_api.errors import error_object, from_protocol_status

_PATCHED_NAME = "_send_error_response"


async def _send_error_response(self: H11Protocol, status_code: int) -> None:
    error = from_protocol_status(status_code)
    body = json.dumps(error_object(error), separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await self._send_h11_event(h11.Response(
        status_code=error.status,
        headers=list(chain(headers, self.config.response_headers("h11")))))
    await self._send_h11_event(h11.Data(data=body))
    await self._send_h11_event(h11.EndOfMessage())


def install() -> None:
    """Make Hypercorn's HTTP/1.1 protocol answer unparseable requests in the API's error
    shape. Idempotent. Raises RuntimeError if Hypercorn no longer has the method replaced."""
    if not callable(getattr(H11Protocol, _PATCHED_NAME, None)):
        raise RuntimeError(f"hypercorn's H11Protocol has no {_PATCHED_NAME}: "
                           "ailb.http_api.h11_errors needs updating for this Hypercorn")
    setattr(H11Protocol, _PATCHED_NAME, _send_error_response)
