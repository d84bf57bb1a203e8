"""``marchproxy.ModuleService``: what MarchProxy's control plane asks of a module.

Every RPC needs the admin key (``authorization: Bearer ...`` metadata). Implemented here:
status, health (``deep_check`` probes every deployment now), stats (the request window that
feeds ``/metrics`` too; ``reset_counters`` starts a new window), metrics (once, or streamed every
``interval_seconds`` until the client cancels), instances, reload (the SIGHUP path), shutdown
(the SIGTERM drain), scale (refused with a clear error: AILB scales by running more instances)
and can-handle. Routes, runtime rate limits and configuration: :mod:`module_control`; traffic
weights (blue/green): :mod:`module_traffic`.

Handlers raise :class:`~ailb.errors.GatewayError` subclasses, never grpclib's ``GRPCError``:
the server runs this service behind :class:`~ailb.grpc_api.metadata.Guarded`, the one place
they become gRPC statuses.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import trio
from grpclib.server import Stream
from trio_asyncio import trio_as_aio

from ailb import __version__
from ailb.errors import NotFound, PermissionDenied
from ailb.grpc_api.control import Control, error, now_stamp, stamp
from ailb.grpc_api.gen.marchproxy import module_grpc
from ailb.grpc_api.gen.marchproxy import module_pb2 as pb
from ailb.grpc_api.gen.marchproxy import types_pb2 as t
from ailb.grpc_api.metadata import MetadataHeaders, grpc_caller
from ailb.grpc_api.module_control import RuntimeControlRPCs
from ailb.grpc_api.module_traffic import TrafficRPCs
from ailb.pipeline.services import Services

SERVED_PATHS = ("/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/models")
HTTP_PROTOCOLS = (t.PROTOCOL_HTTP, t.PROTOCOL_HTTPS, t.PROTOCOL_HTTP2, t.PROTOCOL_GRPC)


class ModuleService(RuntimeControlRPCs, TrafficRPCs, module_grpc.ModuleServiceBase):
    def __init__(self, services: Services, control: Control, started_at: float,
                 tls_enabled: bool = False) -> None:
        self._services = services
        self._control = control
        self._started_at = started_at
        self._tls = tls_enabled

    def _admin(self, stream: Any) -> None:
        """Raises AuthThrottled while the caller's address is throttled,
        AuthenticationFailed without a valid key, PermissionDenied for a key that is not the
        admin key."""
        principal = self._services.auth.authenticate(MetadataHeaders(stream.metadata),
                                                     grpc_caller(stream))
        if not principal.is_admin:
            raise PermissionDenied("ModuleService needs the admin key.")

    async def _audit(self, stream: Any, action: str, target: str = "",
                     changes: dict[str, Any] | None = None, ok: bool = True) -> None:
        """Record a change asked by the admin (call after ``_admin``) in the audit log, on the
        Trio side; returns once it is written (or its failure logged and counted)."""
        await trio_as_aio(partial(
            self._services.audit.record, actor="admin-key", door="grpc",
            address=grpc_caller(stream).address, action=action, target=target,
            changes=changes, outcome="ok" if ok else "refused"))()

    def _health(self) -> t.HealthStatus:
        services = self._services
        if services.drain.draining:
            return t.HEALTH_STATUS_STOPPING
        records = services.board.snapshot()
        if not records or not services.board.any_up():
            return t.HEALTH_STATUS_UNHEALTHY if any(r.state == "down" for r in records.values()) \
                else t.HEALTH_STATUS_STARTING
        healthy = all(r.state == "up" for r in records.values())
        return t.HEALTH_STATUS_HEALTHY if healthy and not services.config.last_error \
            else t.HEALTH_STATUS_DEGRADED

    def _instance(self) -> t.ModuleInstance:
        s = self._services.settings
        return t.ModuleInstance(
            instance_id=s.module_id, module_type=t.MODULE_TYPE_AILB,
            address=f"{s.server.host}:{s.server.http_port}", health_status=self._health(),
            metadata={"version": __version__, "grpc_port": str(s.server.grpc_port),
                      "config_generation": str(self._services.config.generation)},
            started_at=stamp(self._started_at),
            current_connections=self._services.drain.in_flight, max_connections=0,
            version=__version__, traffic_weight=100)

    def _details(self) -> dict[str, str]:
        return {name: record.state for name, record in self._services.board.snapshot().items()}

    def _metrics(self, names: Any) -> t.ModuleMetrics:
        wanted = set(names)
        points = []
        for family in self._services.metrics.collect():
            for sample in family.samples:
                if wanted and sample.name not in wanted and family.name not in wanted:
                    continue
                points.append(t.MetricDataPoint(name=sample.name, value=float(sample.value),
                                                labels=dict(sample.labels), timestamp=now_stamp()))
        return t.ModuleMetrics(instance_id=self._services.settings.module_id,
                               module_type=t.MODULE_TYPE_AILB, metrics=points,
                               collected_at=now_stamp())

    # -- status, health, stats, metrics -------------------------------------------------------
    async def GetStatus(self, stream: Stream[pb.GetStatusRequest, pb.GetStatusResponse]) -> None:
        await stream.recv_message()
        self._admin(stream)
        health = self._health()
        await stream.send_message(pb.GetStatusResponse(
            instance=self._instance(), status=health,
            message=t.HealthStatus.Name(health), last_updated=now_stamp(), details=self._details()))

    async def HealthCheck(self, stream: Stream[pb.HealthCheckRequest,
                                               pb.HealthCheckResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        if request.deep_check:
            await trio_as_aio(self._probe_now)()
        records = self._services.board.snapshot()
        checks = {name: f"{r.state}: {r.detail}" if r.detail else r.state
                  for name, r in records.items()}
        health = self._health()
        await stream.send_message(pb.HealthCheckResponse(
            status=health, message=t.HealthStatus.Name(health), checks=checks,
            checked_at=now_stamp()))

    async def _probe_now(self) -> None:
        """Ask every deployment's probe to run now and wait (bounded) for the answers."""
        board = self._services.board
        before = {name: r.checked_at for name, r in board.snapshot().items()}
        for name in before:
            board.request_probe(name)
        with trio.move_on_after(self._services.settings.health.timeout_s + 1):
            # records are plain values replaced by the probe tasks: poll them (bounded)
            while any(board.snapshot()[n].checked_at == before[n]  # noqa: ASYNC110
                      for n in before if n in board.snapshot()):
                await trio.sleep(0.02)

    async def GetStats(self, stream: Stream[pb.GetStatsRequest, pb.GetStatsResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        w = self._services.window
        stats = t.ModuleStats(
            instance_id=self._services.settings.module_id, total_requests=w.total,
            successful_requests=w.succeeded, failed_requests=w.failed,
            active_connections=self._services.drain.in_flight, total_connections=w.total,
            avg_latency_ms=w.average_s() * 1000, p50_latency_ms=w.percentile_s(0.5) * 1000,
            p95_latency_ms=w.percentile_s(0.95) * 1000,
            p99_latency_ms=w.percentile_s(0.99) * 1000, since=stamp(w.since),
            cpu_usage_percent=w.cpu_percent(), memory_usage_mb=w.memory_mb(),
            custom_stats={"config_generation": str(self._services.config.generation)})
        if request.reset_counters:
            w.reset()
        await stream.send_message(pb.GetStatsResponse(stats=stats))

    async def GetMetrics(self, stream: Stream[pb.GetMetricsRequest,
                                              pb.GetMetricsResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        await stream.send_message(pb.GetMetricsResponse(
            metrics=self._metrics(request.metric_names), collected_at=now_stamp()))

    async def StreamMetrics(self, stream: Stream[pb.StreamMetricsRequest,
                                                 pb.StreamMetricsResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        interval = max(1, request.interval_seconds or 10)
        while True:  # until the client cancels (grpclib cancels this task)
            await stream.send_message(pb.StreamMetricsResponse(
                metrics=self._metrics(request.metric_names), timestamp=now_stamp()))
            await asyncio.sleep(interval)

    async def GetInstances(self, stream: Stream[pb.GetInstancesRequest,
                                                pb.GetInstancesResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        instance = self._instance()
        keep = (request.module_type in (t.MODULE_TYPE_UNSPECIFIED, t.MODULE_TYPE_AILB)
                and request.status_filter in (t.HEALTH_STATUS_UNSPECIFIED,
                                              instance.health_status))
        instances = [instance] if keep else []
        await stream.send_message(pb.GetInstancesResponse(instances=instances,
                                                          total_instances=len(instances)))

    # -- lifecycle ----------------------------------------------------------------------------
    async def Reload(self, stream: Stream[pb.ReloadRequest, pb.ReloadResponse]) -> None:
        await stream.recv_message()
        self._admin(stream)
        ok = self._control.reload()
        path = self._services.settings.config_path
        if ok:
            generation = self._services.config.generation
            reply = pb.ReloadResponse(success=True, message=(
                f"configuration generation {generation} is live"))
            changes: dict[str, Any] = {"generation": generation}
        else:
            reason = self._services.config.last_error or "reload refused"
            reply = pb.ReloadResponse(success=False, message=reason,
                                      error=error(t.STATUS_CODE_INVALID_ARGUMENT, reason))
            changes = {"error": reason}
        await self._audit(stream, "config.reload", str(path) if path else "", changes, ok)
        await stream.send_message(reply)

    async def Shutdown(self, stream: Stream[pb.ShutdownRequest, pb.ShutdownResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        grace = float(request.timeout_seconds) if request.timeout_seconds > 0 else None
        if not request.graceful:
            grace = 0.0
        await self._audit(stream, "shutdown", self._services.settings.module_id,
                          {"graceful": request.graceful, "grace_s": grace})
        await stream.send_message(pb.ShutdownResponse(success=True, message=(
            "draining: in-flight requests get "
            f"{grace if grace is not None else self._services.settings.server.grace_s:g} s")))
        self._control.request_shutdown(grace)

    async def Scale(self, stream: Stream[pb.ScaleRequest, pb.ScaleResponse]) -> None:
        await stream.recv_message()
        self._admin(stream)
        message = ("AILB does not scale itself: run more AILB instances behind MarchProxy "
                   "(each is one process with its own MODULE_ID).")
        await self._audit(stream, "scale", self._services.settings.module_id,
                          {"error": message}, ok=False)
        await stream.send_message(pb.ScaleResponse(
            success=False, message=message, current_instances=1, desired_instances=1,
            error=error(t.STATUS_CODE_INVALID_ARGUMENT, message)))

    async def CanHandle(self, stream: Stream[pb.CanHandleRequest, pb.CanHandleResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        route = request.route
        model = route.metadata.get("model") or request.context.get("model", "")
        reason, can = "", False
        if route.protocol not in (*HTTP_PROTOCOLS, t.PROTOCOL_UNSPECIFIED):
            reason = "AILB serves HTTP and gRPC only"
        elif route.path_pattern and not any(route.path_pattern.startswith(p)
                                            for p in SERVED_PATHS):
            reason = f"AILB does not serve {route.path_pattern}"
        elif model:
            try:
                self._services.router.route(model)
                can, reason = True, f"model {model} is routed"
            except NotFound:
                reason = f"model {model} is not routed here"
        else:
            can, reason = True, "AILB serves this path"
        await stream.send_message(pb.CanHandleResponse(can_handle=can, priority=100 if can else 0,
                                                       reason=reason))
