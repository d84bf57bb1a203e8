"""``ModuleService`` blue/green RPCs. A *version* is a deployment; its weight (0-100) replaces
the YAML weight in routing from the next request (0: out of rotation). ``PromoteVersion`` gives
one version all traffic, ``Rollback`` goes back to the weights before the last change (or
promotes ``target_version`` when given). Mixed into ``ModuleService``. Changes are written to
``traffic.json`` in a worker thread (on the Trio side, through ``trio_as_aio``)."""

from __future__ import annotations

from typing import Any

from grpclib.server import Stream
from trio_asyncio import trio_as_aio

from ailb.audit.entry import diff
from ailb.errors import GatewayError
from ailb.grpc_api.control import Control, error
from ailb.grpc_api.gen.marchproxy import module_pb2 as pb
from ailb.grpc_api.gen.marchproxy import types_pb2 as t
from ailb.pipeline.services import Services


class TrafficRPCs:
    _services: Services
    _control: Control

    def _admin(self, stream: Any) -> None:
        raise NotImplementedError  # ModuleService's

    async def _audit(self, stream: Any, action: str, target: str = "",
                     changes: dict[str, Any] | None = None, ok: bool = True) -> None:
        raise NotImplementedError  # ModuleService's

    def _known(self) -> set[str]:
        return {d.name for d in self._services.settings.deployments}

    def _weights(self) -> dict[str, int]:
        overrides = self._control.traffic.weights()
        return {d.name: overrides.get(d.name, 100 if d.weight > 0 else 0)
                for d in self._services.settings.deployments}

    def _config(self) -> t.BlueGreenConfig:
        ranked = sorted(self._weights().items(), key=lambda item: (-item[1], item[0]))
        blue = ranked[0] if ranked else ("", 0)
        green = ranked[1] if len(ranked) > 1 else ("", 0)
        return t.BlueGreenConfig(blue_version=blue[0], green_version=green[0],
                                 blue_weight=blue[1], green_weight=green[1],
                                 active_version=blue[0], canary_enabled=0 < green[1] < blue[1],
                                 canary_percent=green[1] if 0 < green[1] < blue[1] else 0)

    def _active(self) -> str:
        return self._config().active_version

    def _error(self, exc: GatewayError) -> t.Error:
        return error(t.STATUS_CODE_INVALID_ARGUMENT, exc.message, exc.param or "")

    async def SetTrafficWeight(self, stream: Stream[pb.SetTrafficWeightRequest,
                                                    pb.SetTrafficWeightResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        before = self._weights()
        try:
            await trio_as_aio(self._control.traffic.assign)({request.version: request.weight},
                                                            self._known())
        except GatewayError as exc:
            await self._audit(stream, "traffic_weight.set", request.version,
                              {"error": exc.message, "weight": request.weight}, ok=False)
            await stream.send_message(pb.SetTrafficWeightResponse(
                success=False, message=exc.message, current_config=self._config(),
                error=self._error(exc)))
            return
        self._control.apply_routes(self._services)
        await self._audit(stream, "traffic_weight.set", request.version,
                          diff(before, self._weights()))
        await stream.send_message(pb.SetTrafficWeightResponse(
            success=True, message=f"{request.version} weighs {request.weight}",
            current_config=self._config()))

    async def GetActiveVersion(self, stream: Stream[pb.GetActiveVersionRequest,
                                                    pb.GetActiveVersionResponse]) -> None:
        await stream.recv_message()
        self._admin(stream)
        config = self._config()
        await stream.send_message(pb.GetActiveVersionResponse(
            active_version=config.active_version, config=config,
            version_weights=self._weights()))

    async def PromoteVersion(self, stream: Stream[pb.PromoteVersionRequest,
                                                  pb.PromoteVersionResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        before = self._weights()
        try:
            await trio_as_aio(self._control.traffic.promote)(request.version, self._known())
        except GatewayError as exc:
            await self._audit(stream, "version.promote", request.version,
                              {"error": exc.message}, ok=False)
            await stream.send_message(pb.PromoteVersionResponse(
                success=False, message=exc.message, error=self._error(exc)))
            return
        self._control.apply_routes(self._services)
        await self._audit(stream, "version.promote", request.version,
                          diff(before, self._weights()))
        await stream.send_message(pb.PromoteVersionResponse(
            success=True, promoted_version=request.version,
            message=f"{request.version} takes all traffic (promoted at once)"))

    async def Rollback(self, stream: Stream[pb.RollbackRequest, pb.RollbackResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._admin(stream)
        previous = self._active()
        before = self._weights()
        try:
            if request.target_version:
                await trio_as_aio(self._control.traffic.promote)(request.target_version,
                                                                 self._known())
            elif not await trio_as_aio(self._control.traffic.rollback)():
                message = "no earlier traffic weights to go back to"
                await self._audit(stream, "version.rollback", request.target_version,
                                  {"error": message}, ok=False)
                await stream.send_message(pb.RollbackResponse(
                    success=False, message=message, previous_version=previous,
                    current_version=previous, error=error(t.STATUS_CODE_NOT_FOUND, message)))
                return
        except GatewayError as exc:
            await self._audit(stream, "version.rollback", request.target_version,
                              {"error": exc.message}, ok=False)
            await stream.send_message(pb.RollbackResponse(success=False, message=exc.message,
                                                          error=self._error(exc)))
            return
        self._control.apply_routes(self._services)
        await self._audit(stream, "version.rollback", request.target_version,
                          diff(before, self._weights()))
        await stream.send_message(pb.RollbackResponse(
            success=True, message="rolled back", previous_version=previous,
            current_version=self._active()))
