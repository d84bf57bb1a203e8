"""``grpc.health.v1.Health``: the standard health service of the gRPC port, for load balancers
and orchestrators (Kubernetes gRPC probes, Envoy, grpc_health_probe). No key is needed.

Every service the port serves, and the server as a whole (``""``), is ``SERVING`` when
``/readyz`` would say ready (:func:`~ailb.pipeline.readiness.is_ready`: a deployment can serve,
the store is up, not draining) and ``NOT_SERVING`` otherwise; a name the port does not serve is
unknown (``Check``: ``NOT_FOUND``; ``Watch``: ``SERVICE_UNKNOWN``, as the protocol says).

``Watch`` streams each change: a watcher wakes when told (:meth:`GrpcHealth.changed`, as the
supervisor does at shutdown) and looks again every ``WATCH_POLL_S`` for what changes without
telling (a deployment's probe, the store). At shutdown the supervisor marks the process unready
and wakes the watchers (``NOT_SERVING`` goes out while requests are still served, for
``SERVER.unready_delay_s``); when the drain begins it ends every Watch call with ``UNAVAILABLE``
(:meth:`GrpcHealth.end_watches`): a call cut with its connection would lose the last message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import trio
from grpclib.const import Cardinality, Handler
from trio_asyncio import aio_as_trio, trio_as_aio

from ailb.errors import NotFound, ShuttingDown
from ailb.grpc_api.metadata import grpc_status
from ailb.grpc_api.std_protos import (
    HEALTH_SERVICE,
    NOT_SERVING,
    SERVICE_UNKNOWN,
    SERVING,
    StdProtos,
)
from ailb.pipeline.readiness import is_ready
from ailb.pipeline.services import Services

WATCH_POLL_S = 0.5
END_WAIT_S = 1.0  # at shutdown, at most this long for the Watch calls to end
_PKG = "grpc.health.v1"


class _Watcher:
    __slots__ = ("sent", "service")

    def __init__(self, service: str) -> None:
        self.service = service
        self.sent: int | None = None


class GrpcHealth:
    """The health servicer and its watchers (one per server)."""

    def __init__(self, services: Services, protos: StdProtos | None = None) -> None:
        self._services = services
        self.protos = protos = protos or StdProtos()
        self._names: set[str] = {"", HEALTH_SERVICE}
        self._wake = trio.Event()
        self._progress = trio.Event()  # set when a watcher sent a status or left
        self._watchers: set[_Watcher] = set()
        self._ending = False
        self._request = protos.message(f"{_PKG}.HealthCheckRequest")
        self._response = protos.message(f"{_PKG}.HealthCheckResponse")
        self._list_request = protos.message(f"{_PKG}.HealthListRequest")
        self._list_response = protos.message(f"{_PKG}.HealthListResponse")

    def register(self, names: Iterable[str]) -> None:
        """The services the server runs: known to Check, Watch and List."""
        self._names.update(names)

    def status(self, service: str) -> int:
        if service not in self._names:
            return SERVICE_UNKNOWN
        return SERVING if is_ready(self._services) else NOT_SERVING

    def changed(self) -> None:
        """Readiness may have changed: every watcher looks again now."""
        self._wake.set()
        self._wake = trio.Event()

    async def end_watches(self, timeout_s: float = END_WAIT_S) -> None:
        """(Trio) The server is closing: every watcher sends the status in force and ends its
        call with ``UNAVAILABLE`` (a call cut with the connection would lose its last
        message). Waits at most ``timeout_s`` for them; later ones end at once."""
        self._ending = True
        self.changed()
        with trio.move_on_after(timeout_s):
            while self._watchers:
                progress = self._progress
                await progress.wait()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def _check(self, stream: Any) -> None:
        request = await stream.recv_message()
        assert request is not None
        status = self.status(request.service)
        if status == SERVICE_UNKNOWN:
            raise NotFound(f"This server does not serve {request.service!r}.")
        await stream.send_message(self._response(status=status))

    async def _list(self, stream: Any) -> None:
        await stream.recv_message()
        reply = self._list_response()
        for name in sorted(self._names):
            reply.statuses[name].status = self.status(name)
        await stream.send_message(reply)

    async def _watch(self, stream: Any) -> None:
        request = await stream.recv_message()
        assert request is not None
        await trio_as_aio(self._follow)(stream, request.service)

    async def _follow(self, stream: Any, service: str) -> None:
        """(Trio) Send the status of ``service``, then each change, until the call ends or
        the server closes."""
        watcher = _Watcher(service)
        self._watchers.add(watcher)
        send = aio_as_trio(stream.send_message)
        try:
            while True:
                wake = self._wake
                status = self.status(service)
                if status != watcher.sent:
                    await send(self._response(status=status))
                    watcher.sent = status
                    self._progressed()
                if self._ending:
                    ending = ShuttingDown("AILB is shutting down; watch another instance.")
                    await aio_as_trio(stream.send_trailing_metadata)(
                        status=grpc_status(ending), status_message=ending.message)
                    return
                with trio.move_on_after(WATCH_POLL_S):
                    await wake.wait()
        finally:
            self._watchers.discard(watcher)
            self._progressed()

    def __mapping__(self) -> Mapping[str, Handler]:
        base = f"/{HEALTH_SERVICE}/"
        return {
            base + "Check": Handler(self._check, Cardinality.UNARY_UNARY, self._request,
                                    self._response),
            base + "List": Handler(self._list, Cardinality.UNARY_UNARY, self._list_request,
                                   self._list_response),
            base + "Watch": Handler(self._watch, Cardinality.UNARY_STREAM, self._request,
                                    self._response),
        }
