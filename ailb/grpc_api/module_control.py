"""``ModuleService`` RPCs that change AILB at runtime: routes (aliases), rate limits and the
configuration file. Mixed into :class:`~ailb.grpc_api.module_service.ModuleService`.

Every change is written to disk first (in a worker thread, on the Trio side through
``trio_as_aio``), then made live."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import trio
from grpclib.server import Stream
from trio_asyncio import trio_as_aio

from ailb.config.schema import AliasSettings
from ailb.config.settings import load_settings
from ailb.config.view import masked
from ailb.errors import ConfigError, GatewayError, InvalidRequest, NotFound, PermissionDenied
from ailb.files import write_atomically_in_thread
from ailb.grpc_api.control import Control, error, stamp
from ailb.grpc_api.gen.marchproxy import module_pb2 as pb
from ailb.grpc_api.gen.marchproxy import types_pb2 as t
from ailb.limits.runtime import RuntimeLimit
from ailb.pipeline.services import Services
from ailb.routing.runtime_routes import parse_targets
from ailb.runtime import restart_needed

SORTABLE = ("route_id", "destination_pattern", "path_pattern", "priority")


class RuntimeControlRPCs:
    _services: Services
    _control: Control
    _tls: bool

    def _admin(self, stream: Any) -> None:
        raise NotImplementedError  # ModuleService's

    async def _audit(self, stream: Any, action: str, target: str = "",
                     changes: dict[str, Any] | None = None, ok: bool = True) -> None:
        raise NotImplementedError  # ModuleService's

    # -- routes: a model or alias and its deployments -------------------------------------------
    def _route_messages(self) -> list[t.Route]:
        router = self._services.router
        runtime = self._control.routes.aliases()
        routes = []
        for route in router.models():
            source = ("runtime" if route.public in runtime else
                      "config" if route.owned_by == "ailb" else "model")
            routes.append(t.Route(
                route_id=route.public, protocol=t.PROTOCOL_HTTP,
                destination_pattern=",".join(f"{x.deployment}/{x.model}" for x in route.targets),
                path_pattern="/v1/chat/completions", priority=0,
                metadata={"strategy": route.strategy, "source": source,
                          **({"hedge_ms": f"{route.hedge_ms:g}"} if route.hedge_ms else {})}))
        return routes

    async def GetRoutes(self, stream: Stream[pb.GetRoutesRequest, pb.GetRoutesResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        routes = [r for r in self._route_messages()
                  if all(_matches(r, f) for f in request.query.filters)]
        key = request.query.sort_by or "route_id"
        if key not in SORTABLE:
            raise InvalidRequest(f"sort_by: one of {', '.join(SORTABLE)}", param="sort_by")
        routes.sort(key=lambda r: getattr(r, key), reverse=request.query.sort_desc)
        if request.query.pagination.page_size < 0 or request.query.pagination.page < 0:
            raise InvalidRequest("pagination: page and page_size >= 0", param="pagination")
        size = request.query.pagination.page_size or 50
        page = max(1, request.query.pagination.page or 1)
        total = len(routes)
        shown = routes[(page - 1) * size: page * size]
        await stream.send_message(pb.GetRoutesResponse(
            routes=shown, total_routes=total, pagination=t.Pagination(
                page=page, page_size=size, total_items=total,
                total_pages=(total + size - 1) // size)))

    async def UpdateRoutes(self, stream: Stream[pb.UpdateRoutesRequest,
                                                pb.UpdateRoutesResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        names = {d.name for d in self._services.settings.deployments}
        target = ",".join(r.route_id for r in request.routes)
        asked = {"replace_all": request.replace_all, "routes": [
            {"route_id": r.route_id, "destination_pattern": r.destination_pattern,
             "metadata": dict(r.metadata)} for r in request.routes]}
        try:
            aliases = []
            for route in request.routes:
                if not route.route_id:
                    raise InvalidRequest("route_id (the public model name) is required",
                                         param="route_id")
                hedge = route.metadata.get("hedge_ms")
                aliases.append(AliasSettings(
                    route.route_id, parse_targets(route.destination_pattern, names),
                    route.metadata.get("strategy") or None,
                    float(hedge) if hedge else None))
            await trio_as_aio(self._control.routes.put)(aliases, request.replace_all)
        except (GatewayError, ValueError) as exc:
            message = getattr(exc, "message", str(exc))
            await self._audit(stream, "routes.update", target, {**asked, "error": message},
                              ok=False)
            await stream.send_message(pb.UpdateRoutesResponse(
                success=False, message=message, routes_updated=0,
                error=error(t.STATUS_CODE_INVALID_ARGUMENT, message)))
            return
        self._control.apply_routes(self._services)
        await self._audit(stream, "routes.update", target, asked)
        await stream.send_message(pb.UpdateRoutesResponse(
            success=True, message="routes are live", routes_updated=len(aliases)))

    async def DeleteRoute(self, stream: Stream[pb.DeleteRouteRequest,
                                               pb.DeleteRouteResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        deleted = await trio_as_aio(self._control.routes.delete)(request.route_id)
        if deleted:
            self._control.apply_routes(self._services)
            reply = pb.DeleteRouteResponse(success=True, message="deleted")
            changes = {}
        else:
            message = (f"no runtime route {request.route_id!r} (routes from the configuration "
                       "file are changed there)")
            reply = pb.DeleteRouteResponse(success=False, message=message,
                                           error=error(t.STATUS_CODE_NOT_FOUND, message))
            changes = {"error": message}
        await self._audit(stream, "routes.delete", request.route_id, changes, deleted)
        await stream.send_message(reply)

    # -- configuration ------------------------------------------------------------------------
    async def GetConfig(self, stream: Stream[pb.GetConfigRequest, pb.GetConfigResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        settings = self._services.settings
        kind = request.config_type or "effective"
        if kind == "yaml":
            if not self._tls:  # the file may hold keys: never over a plaintext connection
                raise PermissionDenied("config_type yaml needs TLS on the gRPC port "
                                       "(GRPC.tls_cert); 'effective' is masked")
            path = settings.config_path
            if path is None or not path.is_file():
                raise NotFound("AILB runs on built-in defaults: no file")
            data = path.read_bytes()
            updated = stamp(path.stat().st_mtime)
            config_id = str(path)
        elif kind == "effective":
            data = json.dumps(masked(settings), indent=2).encode()
            updated = stamp(self._services.config.loaded_at)
            config_id = "effective"
        else:
            raise InvalidRequest("config_type: effective (default) or yaml",
                                 param="config_type")
        update = t.ConfigUpdate(
            config_id=config_id, config_type=kind, config_data=data,
            checksum=hashlib.sha256(data).hexdigest(), updated_at=updated,
            metadata={"generation": str(self._services.config.generation)})
        await stream.send_message(pb.GetConfigResponse(configs=[update], last_updated=updated))

    async def UpdateConfig(self, stream: Stream[pb.UpdateConfigRequest,
                                                pb.UpdateConfigResponse]) -> None:
        """Validate a YAML file (with the process environment over it, as at start); unless
        ``validate_only``, write it in place of the configuration file and reload."""
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        data = request.config.config_data
        errors: list[str] = []
        if request.config.checksum and request.config.checksum != hashlib.sha256(
                data).hexdigest():
            errors.append("checksum: does not match config_data (sha256, hex)")
        if not errors:
            errors = await trio_as_aio(trio.to_thread.run_sync)(_problems, data)
        path = self._services.settings.config_path
        target = str(path) if path else ""
        # the file may hold keys: the log says which bytes (their hash), never what they say
        asked = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        if errors and not request.validate_only:
            await self._audit(stream, "config.update", target, {**asked, "error": errors[0]},
                              ok=False)
        if errors or request.validate_only:
            await stream.send_message(pb.UpdateConfigResponse(
                success=not errors, validation_passed=not errors, validation_errors=errors,
                message="valid" if not errors else "invalid: nothing changed",
                error=error(t.STATUS_CODE_INVALID_ARGUMENT, errors[0]) if errors else None))
            return
        if path is None:
            message = "AILB was started without a configuration file: nowhere to write it"
            await self._audit(stream, "config.update", target, {**asked, "error": message},
                              ok=False)
            await stream.send_message(pb.UpdateConfigResponse(
                success=False, validation_passed=True, message=message,
                error=error(t.STATUS_CODE_ERROR, message)))
            return
        try:
            # through a symlink, keeping the file mode; fsyncs in a worker thread
            await trio_as_aio(write_atomically_in_thread)(path.resolve(), data)
        except OSError as exc:
            message = f"cannot write {path}: {exc}"
            await self._audit(stream, "config.update", target, {**asked, "error": message},
                              ok=False)
            await stream.send_message(pb.UpdateConfigResponse(
                success=False, validation_passed=True, message=message,
                error=error(t.STATUS_CODE_ERROR, message)))
            return
        before = self._services.settings
        applied = self._control.reload()
        later = restart_needed(before, self._services.settings) if applied else []
        message = f"written to {path}; " + ("reloaded" if applied else "reload refused")
        if later:
            message += f"; a restart applies {', '.join(later)}"
        reason = self._services.config.last_error or "reload refused"
        # written: the change is made (outcome ok), whether the reload took it or not
        await self._audit(stream, "config.update", target, {
            **asked, "reloaded": applied, "generation": self._services.config.generation,
            **({} if applied else {"error": reason})})
        await stream.send_message(pb.UpdateConfigResponse(
            success=applied, validation_passed=True, message=message,
            error=None if applied else error(t.STATUS_CODE_ERROR, reason)))

    # -- runtime rate limits ------------------------------------------------------------------
    @staticmethod
    def _limit_message(limit: RuntimeLimit) -> t.RateLimit:
        return t.RateLimit(limit_id=limit.limit_id, target=limit.target,
                           requests_per_second=limit.requests_per_second,
                           requests_per_minute=limit.requests_per_minute,
                           requests_per_hour=limit.requests_per_hour,
                           burst_size=limit.burst_size, enabled=limit.enabled,
                           metadata=dict(limit.metadata))

    async def GetRateLimits(self, stream: Stream[pb.GetRateLimitsRequest,
                                                 pb.GetRateLimitsResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        limits = self._services.runtime_limits.all(request.target)
        await stream.send_message(pb.GetRateLimitsResponse(
            limits=[self._limit_message(x) for x in limits], total_limits=len(limits)))

    async def SetRateLimit(self, stream: Stream[pb.SetRateLimitRequest,
                                                pb.SetRateLimitResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        given = request.limit
        limit = RuntimeLimit(
            limit_id=given.limit_id, target=given.target,
            requests_per_second=given.requests_per_second,
            requests_per_minute=given.requests_per_minute,
            requests_per_hour=given.requests_per_hour, burst_size=given.burst_size,
            enabled=given.enabled, metadata=dict(given.metadata))
        try:
            await trio_as_aio(self._services.runtime_limits.set)(limit, trio.current_time())
        except GatewayError as exc:
            await self._audit(stream, "rate_limit.set", limit.limit_id,
                              {**_limit_fields(limit), "error": exc.message}, ok=False)
            await stream.send_message(pb.SetRateLimitResponse(
                success=False, message=exc.message,
                error=error(t.STATUS_CODE_INVALID_ARGUMENT, exc.message, exc.param or "")))
            return
        await self._audit(stream, "rate_limit.set", limit.limit_id, _limit_fields(limit))
        await stream.send_message(pb.SetRateLimitResponse(
            success=True, message=f"{limit.limit_id} applies to {limit.target} from the next "
                                  "request"))

    async def RemoveRateLimit(self, stream: Stream[pb.RemoveRateLimitRequest,
                                                   pb.RemoveRateLimitResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        removed = await trio_as_aio(self._services.runtime_limits.remove)(request.limit_id)
        if removed:
            reply = pb.RemoveRateLimitResponse(success=True, message="removed")
        else:
            message = f"no rate limit {request.limit_id!r}"
            reply = pb.RemoveRateLimitResponse(success=False, message=message,
                                               error=error(t.STATUS_CODE_NOT_FOUND, message))
        await self._audit(stream, "rate_limit.remove", request.limit_id,
                          {} if removed else {"error": reply.message}, removed)
        await stream.send_message(reply)


def _limit_fields(limit: RuntimeLimit) -> dict[str, Any]:
    """A runtime limit as the audit log records it."""
    return {"target": limit.target, "requests_per_second": limit.requests_per_second,
            "requests_per_minute": limit.requests_per_minute,
            "requests_per_hour": limit.requests_per_hour, "burst_size": limit.burst_size,
            "enabled": limit.enabled, "metadata": dict(limit.metadata)}


def _problems(data: bytes) -> list[str]:
    """What is wrong with ``data`` as AILB's YAML (with the process environment over it, as at
    start): nothing, or the ConfigError's message. Blocks (file I/O): run it in a thread."""
    with tempfile.TemporaryDirectory() as folder:
        candidate = Path(folder) / "ailb.yaml"
        candidate.write_bytes(data)
        try:
            load_settings(str(candidate), os.environ)
        except ConfigError as exc:
            return [str(exc)]
    return []


def _matches(route: t.Route, rule: t.Filter) -> bool:
    """One ``Query`` filter: field ``route_id``, ``destination_pattern``, ``path_pattern`` or
    ``metadata.<key>``; operator eq, ne, contains or prefix (eq when empty)."""
    if rule.field.startswith("metadata."):
        value = str(route.metadata.get(rule.field[len("metadata."):], ""))
    else:
        value = str(getattr(route, rule.field, ""))
    wanted = str(rule.value)
    operator = str(rule.operator).lower() or "eq"
    if operator in ("eq", "=", "=="):
        return value == wanted
    if operator in ("ne", "!="):
        return value != wanted
    if operator == "contains":
        return wanted in value
    if operator == "prefix":
        return value.startswith(wanted)
    return False
