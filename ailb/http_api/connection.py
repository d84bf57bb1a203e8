"""Quart-Trio's per-request ASGI handler, extended so a stream body is always closed.

Quart closes a response body only once it starts sending it. If the client leaves earlier (for
example while the status line is being written), the body would never be closed and the upstream
call, the in-flight counts and the access-log line would leak. Handlers therefore attach their
stream body to the request, and this class closes it when the request's task ends, however it
ends. Closing is idempotent, so the normal path (Quart closing it first) is unaffected.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio
from quart_trio.asgi import TrioASGIHTTPConnection

_ATTRIBUTE = "_ailb_stream_body"


class Closable(Protocol):
    async def aclose(self) -> None: ...


def attach_body(request: Any, body: Closable) -> None:
    """Make ``body`` closed when the request ends (``request`` is Quart's request object)."""
    setattr(request, _ATTRIBUTE, body)


class ClosingHTTPConnection(TrioASGIHTTPConnection):
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
