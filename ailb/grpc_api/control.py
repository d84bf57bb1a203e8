"""What the gRPC control plane may ask of the running process, and timestamp helpers."""

from __future__ import annotations

from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from ailb.grpc_api.gen.marchproxy import types_pb2 as t
from ailb.pipeline.services import Services
from ailb.routing.runtime_routes import RuntimeRoutes
from ailb.routing.traffic import TrafficWeights


class Control(Protocol):
    @property
    def routes(self) -> RuntimeRoutes: ...

    @property
    def traffic(self) -> TrafficWeights: ...

    def reload(self) -> bool: ...

    def request_shutdown(self, grace_s: float | None = None) -> None: ...

    def apply_routes(self, services: Services) -> None: ...


def now_stamp() -> Timestamp:
    value = Timestamp()
    value.GetCurrentTime()
    return value


def stamp(seconds: float) -> Timestamp:
    """A protobuf Timestamp of a Unix time in seconds."""
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def error(code: t.StatusCode, message: str, field: str = "") -> t.Error:
    """The contract's ``Error`` for a response: a status code, a message, when, and the
    field at fault if there is one."""
    return t.Error(code=code, message=message, details={"field": field} if field else {},
                   occurred_at=now_stamp())
