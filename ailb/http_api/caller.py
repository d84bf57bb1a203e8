"""Who is calling over HTTP: the client's address as the failed-authentication throttle sees it
(:mod:`ailb.keys.throttle`)."""

from __future__ import annotations

from typing import Any

from quart import request

from ailb.keys.auth import Caller


def http_caller() -> Caller:
    """The current request's client: the peer of its TCP connection (Hypercorn's ASGI
    ``client``). A proxy in front of AILB is that peer for all its clients; forwarded headers
    are not trusted, since any client can write them."""
    return Caller(request.remote_addr or "", "http")


def scope_caller(scope: Any) -> Caller:
    """The same for a request taken on raw ASGI (:mod:`ailb.http_api.fast_door`): the
    ``client`` of its scope, as Quart's ``remote_addr`` reads it."""
    client = scope.get("client")
    return Caller(client[0] if client else "<local>", "http")
