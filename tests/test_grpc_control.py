"""ModuleService's runtime changes: errors reach a real gRPC client with the right status, and
concurrent changes (written to disk in worker threads) never lose one another."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from grpclib import GRPCError, Status

from ailb.config.schema import AliasSettings, AliasTarget
from ailb.errors import InternalError
from ailb.grpc_api.gen.marchproxy import module_pb2 as pb
from ailb.grpc_api.gen.marchproxy import types_pb2 as t
from ailb.limits.runtime import RuntimeLimit, RuntimeLimits
from ailb.routing.runtime_routes import RuntimeRoutes
from ailb.routing.traffic import TrafficWeights
from tests.conftest import StartGateway
from tests.test_grpc import ADMIN, call, module, on_asyncio


async def _refused(port: int, rpc: str, request: Any, **kwargs: Any) -> GRPCError:
    with pytest.raises(GRPCError) as caught:
        await call(port, rpc, request, **kwargs)
    return caught.value


async def test_module_control_errors_reach_the_client_with_their_status(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw_ = await start_gateway()
    port = gw_.grpc_port
    bad_kind = await _refused(port, "GetConfig", pb.GetConfigRequest(config_type="toml"))
    assert bad_kind.status == Status.INVALID_ARGUMENT
    assert bad_kind.message == "config_type: effective (default) or yaml"
    plaintext = await _refused(port, "GetConfig", pb.GetConfigRequest(config_type="yaml"))
    assert plaintext.status == Status.PERMISSION_DENIED and "TLS" in str(plaintext.message)
    paging = await _refused(port, "GetRoutes", pb.GetRoutesRequest(
        query=t.Query(pagination=t.Pagination(page=-1))))
    assert paging.status == Status.INVALID_ARGUMENT
    assert paging.message == "pagination: page and page_size >= 0"
    stranger = await _refused(port, "GetRateLimits", pb.GetRateLimitsRequest(),
                              metadata={"authorization": "Bearer sk-nobody"})
    assert stranger.status == Status.UNAUTHENTICATED

    def broken(target: str = "") -> list[RuntimeLimit]:
        raise RuntimeError("secret: /var/lib/ailb/rate_limits.json")

    monkeypatch.setattr(gw_.services.runtime_limits, "all", broken)
    bug = await _refused(port, "GetRateLimits", pb.GetRateLimitsRequest())
    assert bug.status == Status.INTERNAL  # a bug: the status says so, the details stay here
    assert bug.message == InternalError().message


async def test_concurrent_set_rate_limits_over_grpc_all_persist(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    gw_ = await start_gateway()
    ids = [f"cap-{n}" for n in range(6)]

    async def set_all() -> list[Any]:
        channel, stub = module(gw_.grpc_port)
        try:
            return await asyncio.gather(*(stub.SetRateLimit(pb.SetRateLimitRequest(
                limit=t.RateLimit(limit_id=i, target="model:echo-1", requests_per_minute=100,
                                  enabled=True)), metadata=ADMIN) for i in ids))
        finally:
            channel.close()

    replies = await on_asyncio(set_all)
    assert all(r.success for r in replies)
    listed = await call(gw_.grpc_port, "GetRateLimits", pb.GetRateLimitsRequest())
    assert sorted(x.limit_id for x in listed.limits) == ids
    saved = json.loads((tmp_path / "data" / "rate_limits.json").read_text("utf-8"))
    assert sorted(x["limit_id"] for x in saved) == ids


async def test_concurrent_runtime_changes_are_serialized_and_all_kept(tmp_path: Path) -> None:
    limits = RuntimeLimits(tmp_path, trio.current_time())
    routes = RuntimeRoutes(tmp_path)
    traffic = TrafficWeights(tmp_path)
    names = [f"n{i}" for i in range(8)]
    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(limits.set, RuntimeLimit(
                limit_id=name, target=f"key:{name}", requests_per_second=1), trio.current_time())
            nursery.start_soon(routes.put, [AliasSettings(
                name, (AliasTarget("echo", "echo-1"),), None, None)], False)
            nursery.start_soon(traffic.assign, {name: 50}, set(names))
    assert sorted(x.limit_id for x in limits.all()) == names
    assert sorted(routes.aliases()) == names
    assert sorted(traffic.weights()) == names
    # what is on disk is what is live: a restart finds every change
    assert sorted(x.limit_id for x in RuntimeLimits(tmp_path, 0.0).all()) == names
    assert sorted(RuntimeRoutes(tmp_path).aliases()) == names
    assert sorted(TrafficWeights(tmp_path).weights()) == names
    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(limits.remove, name)
            nursery.start_soon(routes.delete, name)
    assert RuntimeLimits(tmp_path, 0.0).all() == [] and RuntimeRoutes(tmp_path).aliases() == {}
    assert await traffic.rollback()
    assert len(TrafficWeights(tmp_path).weights()) == len(names) - 1
