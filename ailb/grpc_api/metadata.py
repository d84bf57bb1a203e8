"""gRPC metadata and errors at the edge: headers for the authenticator, request ids, and the
error tree mapped to gRPC statuses (each error class names its own).

This is the one place where AILB's errors become grpclib's ``GRPCError``: handlers raise
:class:`~ailb.errors.GatewayError` subclasses, and :func:`guarded` (wrapped around every handler
of every service the server runs, by :class:`Guarded`) maps them; any other exception is a bug
of ours and becomes ``INTERNAL`` with a fixed message, its traceback going to the log only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from google.protobuf.message import DecodeError
from grpclib import GRPCError, Status
from grpclib.const import Handler
from grpclib.exceptions import StreamTerminatedError

from ailb.errors import GatewayError, InternalError, InvalidRequest
from ailb.keys.auth import Caller
from ailb.pipeline.notes import error_headers
from ailb.pipeline.request_log import request_id

_log = logging.getLogger("ailb.grpc")
HandlerFunc = Callable[[Any], Awaitable[None]]


class MetadataHeaders:
    """grpclib's metadata (a multidict) as the header lookup the authenticator takes."""

    def __init__(self, metadata: Any) -> None:
        self._metadata = metadata

    def get(self, key: str) -> str | None:
        value = self._metadata.get(key) if self._metadata is not None else None
        return value if isinstance(value, str) else None


def grpc_caller(stream: Any) -> Caller:
    """The call's client: the peer of its connection (grpclib's ``stream.peer``), "" when
    it has no IP address (a Unix socket)."""
    peer = getattr(stream, "peer", None)
    address = peer.addr() if peer is not None else None
    host = address[0] if isinstance(address, tuple) and address else ""
    return Caller(str(host), "grpc")


def request_id_of(metadata: Any) -> str:
    return request_id(MetadataHeaders(metadata))


def grpc_status(exc: GatewayError) -> Status:
    """The grpclib status an error names (``INTERNAL`` if it names none grpclib knows)."""
    return Status[exc.grpc_status] if exc.grpc_status in Status.__members__ else Status.INTERNAL


def grpc_error(exc: GatewayError) -> GRPCError:
    return GRPCError(grpc_status(exc), exc.message)


def guarded(handler: HandlerFunc) -> HandlerFunc:
    """``handler`` with errors mapped at the door.

    The wrapper raises GRPCError: the mapped status of a GatewayError, ``INVALID_ARGUMENT``
    for a request message protobuf cannot decode (a string field of invalid UTF-8, a corrupt
    wire format), or ``INTERNAL`` with
    :class:`~ailb.errors.InternalError`'s message for any other Exception (logged with its
    traceback). A GatewayError that adds headers (``retry-after`` of a rate limit...) ends the
    call with them as trailing metadata instead, as the Gateway service's errors do.
    grpclib's own GRPCError and StreamTerminatedError (the client went away) and cancellation
    pass through unchanged.
    """

    @functools.wraps(handler)
    async def door(stream: Any) -> None:
        try:
            await handler(stream)
        except (GRPCError, StreamTerminatedError):
            raise
        except GatewayError as exc:
            headers = error_headers(exc)
            if not headers:
                raise grpc_error(exc) from None
            await stream.send_trailing_metadata(status=grpc_status(exc),
                                                status_message=exc.message, metadata=headers)
        except DecodeError as exc:  # the request's bytes are no valid message (bad UTF-8...)
            raise grpc_error(InvalidRequest(f"The request message could not be decoded: "
                                            f"{exc}.")) from None
        except Exception:  # a bug of ours: INTERNAL to the client, the details to the log
            _log.exception("unhandled error in a gRPC handler", extra={"fields": {
                "method": getattr(handler, "__name__", "?"),
                "request_id": request_id_of(getattr(stream, "metadata", None))}})
            raise grpc_error(InternalError()) from None

    return door


class Servicer(Protocol):
    def __mapping__(self) -> Mapping[str, Handler]: ...


class Guarded:
    """A grpclib servicer with every handler behind :func:`guarded`: what the server runs."""

    def __init__(self, servicer: Servicer) -> None:
        self._servicer = servicer

    def __mapping__(self) -> dict[str, Handler]:
        return {path: handler._replace(func=guarded(handler.func))
                for path, handler in self._servicer.__mapping__().items()}
