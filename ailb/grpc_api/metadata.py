"""gRPC metadata and errors at the edge: headers for the authenticator, request ids, and the
error tree mapped to gRPC statuses (each error class names its own)."""

from __future__ import annotations

from typing import Any

from grpclib import GRPCError, Status

from ailb.errors import GatewayError
from ailb.pipeline.request_log import request_id


class MetadataHeaders:
    """grpclib's metadata (a multidict) as the header lookup the authenticator takes."""

    def __init__(self, metadata: Any) -> None:
        self._metadata = metadata

    def get(self, key: str) -> str | None:
        value = self._metadata.get(key) if self._metadata is not None else None
        return value if isinstance(value, str) else None


def request_id_of(metadata: Any) -> str:
    return request_id(MetadataHeaders(metadata))


def grpc_status(exc: GatewayError) -> tuple[Status, str]:
    """The gRPC status and message of an error of the tree."""
    status = Status[exc.grpc_status] if exc.grpc_status in Status.__members__ else \
        Status.INTERNAL
    return status, exc.message


def grpc_error(exc: GatewayError) -> GRPCError:
    return GRPCError(*grpc_status(exc))
