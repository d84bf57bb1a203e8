"""An OTLP/HTTP trace receiver for tests: a raw ASGI app on loopback (Hypercorn, Trio) that
decodes each ``ExportTraceServiceRequest`` (protobuf, opentelemetry-proto) it is POSTed and keeps
the spans as plain values.

    collector = Collector()
    endpoint = await start_collector(nursery, collector)   # http://127.0.0.1:PORT/v1/traces
    spans = await collector.wait_for(lambda spans: any(s.name == "chat m" for s in spans))
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str  # hex
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any]
    start_ns: int
    end_ns: int


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, which) if which else None


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(ReceivedSpan(
                    s.name, KINDS.get(s.kind, str(s.kind)), s.trace_id.hex(), s.span_id.hex(),
                    s.parent_span_id.hex(), {a.key: _value(a.value) for a in s.attributes},
                    s.status.code, resource, s.start_time_unix_nano, s.end_time_unix_nano))
    return spans


class Collector:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.posts: list[dict[str, str]] = []  # each POST's headers
        self.status = 200
        self._changed = trio.Event()
        self.shutdown = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.posts.append(headers)
        ok = (scope["path"] == "/v1/traces" and self.status == 200
              and headers.get("content-type") == "application/x-protobuf")
        if ok:
            self.spans.extend(decode(body))
            self._changed.set()
            self._changed = trio.Event()
        answer = ExportTraceServiceResponse().SerializeToString() if ok else b""
        await send({"type": "http.response.start", "status": 200 if ok else self.status or 400,
                    "headers": [(b"content-type", b"application/x-protobuf"),
                                (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    async def wait_for(self, done: Callable[[list[ReceivedSpan]], bool],
                       timeout_s: float = 10) -> list[ReceivedSpan]:
        with trio.fail_after(timeout_s):
            while not done(self.spans):
                await self._changed.wait()
        return self.spans


async def start_collector(nursery: trio.Nursery, collector: Collector) -> str:
    """Serve ``collector`` on 127.0.0.1; return its traces endpoint."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger("tests.otlp_collector")
    config.graceful_timeout = 0.5
    asgi: Any = collector
    binds: list[str] = await nursery.start(partial(
        hypercorn.trio.serve, asgi, config, shutdown_trigger=collector.shutdown.wait))
    return f"{binds[0]}/v1/traces"
