"""gRPC on a real port: the MarchProxy ModuleService and ailb.v1.Gateway, driven by a grpclib
client (on a trio-asyncio loop of its own) and by grpcio from generated stubs (interop)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
import trio
import trio_asyncio
from grpclib import GRPCError, Status
from grpclib.client import Channel

from ailb.config.schema import Settings
from ailb.errors import ConfigError
from ailb.grpc_api.gen.ailb.v1 import gateway_grpc
from ailb.grpc_api.gen.ailb.v1 import gateway_pb2 as gw
from ailb.grpc_api.gen.marchproxy import module_grpc
from ailb.grpc_api.gen.marchproxy import module_pb2 as pb
from ailb.grpc_api.gen.marchproxy import types_pb2 as t
from ailb.supervisor import Running, run
from tests.conftest import ADMIN_KEY, StartGateway, auth, make_settings
from tests.fakes.openai_upstream import FakeOpenAI, start_fake
from tests.grpc_stubs.ailb.v1 import gateway_pb2_grpc
from tests.grpc_stubs.marchproxy import module_pb2_grpc

T = TypeVar("T")
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
HI = [gw.Message(role="user", content="hello over grpc")]


async def on_asyncio(fn: Callable[[], Awaitable[T]]) -> T:
    """Run an asyncio coroutine function (a grpclib client) from this Trio test. The loop's
    nursery wraps errors in groups: the test wants the client's own exception."""
    try:
        async with trio_asyncio.open_loop():
            return await trio_asyncio.aio_as_trio(fn)()
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        raise leaf from None


def module(port: int) -> tuple[Channel, module_grpc.ModuleServiceStub]:
    channel = Channel("127.0.0.1", port)
    return channel, module_grpc.ModuleServiceStub(channel)


async def call(port: int, rpc: str, request: Any, metadata: dict[str, str] = ADMIN) -> Any:
    async def go() -> Any:
        channel, stub = module(port)
        try:
            return await getattr(stub, rpc)(request, metadata=metadata)
        finally:
            channel.close()

    return await on_asyncio(go)


async def test_status_health_instances_and_credentials(start_gateway: StartGateway) -> None:
    gw_ = await start_gateway()
    status = await call(gw_.grpc_port, "GetStatus", pb.GetStatusRequest(instance_id="ailb-1"))
    assert status.instance.module_type == t.MODULE_TYPE_AILB
    assert status.instance.instance_id == "ailb-1"
    assert status.status in (t.HEALTH_STATUS_HEALTHY, t.HEALTH_STATUS_STARTING)
    health = await call(gw_.grpc_port, "HealthCheck", pb.HealthCheckRequest(deep_check=True))
    assert health.status == t.HEALTH_STATUS_HEALTHY  # the deep check probed just now
    assert health.checks["echo"].startswith("up")
    instances = await call(
        gw_.grpc_port, "GetInstances", pb.GetInstancesRequest(module_type=t.MODULE_TYPE_AILB)
    )
    assert instances.total_instances == 1
    other = await call(
        gw_.grpc_port, "GetInstances", pb.GetInstancesRequest(module_type=t.MODULE_TYPE_ALB)
    )
    assert other.total_instances == 0
    with pytest.raises(GRPCError) as missing:
        await call(gw_.grpc_port, "GetStatus", pb.GetStatusRequest(), metadata={})
    assert missing.value.status == Status.UNAUTHENTICATED
    with pytest.raises(GRPCError) as wrong:
        await call(
            gw_.grpc_port,
            "GetStatus",
            pb.GetStatusRequest(),
            metadata={"authorization": "Bearer nope"},
        )
    assert wrong.value.status == Status.UNAUTHENTICATED


async def test_stats_match_the_http_side(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    gw_ = await start_gateway()
    for content in ("a", "b", "c"):
        await http.post(
            f"{gw_.http_url}/v1/chat/completions",
            headers=auth(),
            json={"model": "echo-1", "messages": [{"role": "user", "content": content}]},
        )
    await http.post(
        f"{gw_.http_url}/v1/chat/completions",
        headers=auth(),
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
    )
    stats = (await call(gw_.grpc_port, "GetStats", pb.GetStatsRequest(reset_counters=True))).stats
    assert (stats.total_requests, stats.successful_requests, stats.failed_requests) == (4, 3, 1)
    assert stats.p99_latency_ms >= stats.p50_latency_ms > 0
    assert stats.memory_usage_mb > 10 and stats.cpu_usage_percent >= 0
    again = (await call(gw_.grpc_port, "GetStats", pb.GetStatsRequest())).stats
    assert again.total_requests == 0  # the window was reset, the Prometheus counters were not
    metrics = await call(
        gw_.grpc_port, "GetMetrics", pb.GetMetricsRequest(metric_names=["ailb_requests_total"])
    )
    points = [p for p in metrics.metrics.metrics if p.name == "ailb_requests_total"]
    assert sum(p.value for p in points) == 4
    assert {p.labels["status"] for p in points} == {"200", "404"}


async def test_stream_metrics_until_cancelled(start_gateway: StartGateway) -> None:
    gw_ = await start_gateway()

    async def go() -> int:
        channel, stub = module(gw_.grpc_port)
        received = 0
        try:
            async with stub.StreamMetrics.open(metadata=ADMIN) as stream:
                await stream.send_message(
                    pb.StreamMetricsRequest(
                        interval_seconds=1, metric_names=["ailb_in_flight_requests"]
                    ),
                    end=True,
                )
                async for reply in stream:
                    assert reply.metrics.metrics[0].name == "ailb_in_flight_requests"
                    received += 1
                    if received == 2:
                        await stream.cancel()
                        break
        finally:
            channel.close()
        return received

    with trio.fail_after(10):
        assert await on_asyncio(go) == 2


async def test_reload_shutdown_scale_and_can_handle(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    loads: list[Callable[[], Settings]] = [lambda: settings]

    def load() -> Settings:
        return loads[-1]()

    async with trio.open_nursery() as life:
        running: Running = await life.start(partial(run, settings, load=load))
        port = running.grpc_port
        ok = await call(port, "Reload", pb.ReloadRequest(graceful=True))
        assert ok.success and running.services.config.generation == 2

        def broken() -> Settings:
            raise ConfigError("ROUTING_STRATEGY", "must be one of ..., got 'x'")

        loads.append(broken)
        refused = await call(port, "Reload", pb.ReloadRequest())
        assert not refused.success
        assert refused.error.code == t.STATUS_CODE_INVALID_ARGUMENT
        assert "ROUTING_STRATEGY" in refused.error.message
        scale = await call(port, "Scale", pb.ScaleRequest(config=t.ScalingConfig(min_instances=2)))
        assert not scale.success and scale.error.code == t.STATUS_CODE_INVALID_ARGUMENT
        yes = await call(
            port,
            "CanHandle",
            pb.CanHandleRequest(
                route=t.Route(
                    protocol=t.PROTOCOL_HTTP,
                    path_pattern="/v1/chat/completions",
                    metadata={"model": "echo-1"},
                )
            ),
        )
        no = await call(
            port, "CanHandle", pb.CanHandleRequest(route=t.Route(protocol=t.PROTOCOL_MYSQL))
        )
        assert yes.can_handle and not no.can_handle
        down = await call(port, "Shutdown", pb.ShutdownRequest(graceful=True, timeout_seconds=5))
        assert down.success
    # leaving the nursery means run() returned: the Shutdown RPC drained and stopped AILB


async def test_chat_over_grpc(start_gateway: StartGateway) -> None:
    gw_ = await start_gateway()

    async def go() -> tuple[Any, list[Any], Any]:
        channel = Channel("127.0.0.1", gw_.grpc_port)
        stub = gateway_grpc.GatewayStub(channel)
        try:
            reply = await stub.ChatComplete(
                gw.ChatRequest(model="echo-1", messages=HI), metadata=ADMIN
            )
            chunks = []
            async with stub.ChatStream.open(metadata=ADMIN) as stream:
                await stream.send_message(
                    gw.ChatRequest(
                        model="echo-1",
                        body_json=json.dumps(
                            {"messages": [{"role": "user", "content": "one two three"}]}
                        ),
                    ),
                    end=True,
                )
                async for chunk in stream:
                    chunks.append(chunk)
            embedded = await stub.Embed(
                gw.EmbedRequest(model="echo-1", input=["a b"]), metadata=ADMIN
            )
            return reply, chunks, embedded
        finally:
            channel.close()

    reply, chunks, embedded = await on_asyncio(go)
    body = json.loads(reply.body_json)
    assert body["choices"][0]["message"]["content"] == "hello over grpc"
    assert reply.usage.completion_tokens == 3 and reply.deployment == "echo"
    text = "".join(
        (json.loads(c.chunk_json)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for c in chunks
    )
    assert text == "one two three"
    assert chunks[0].request_id and chunks[0].deployment == "echo"
    assert chunks[-1].usage.completion_tokens == 3
    assert len(json.loads(embedded.body_json)["data"][0]["embedding"]) == 64


async def test_grpc_inference_honours_keys_and_errors(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    gw_ = await start_gateway(
        prices={"echo-1": {"input_per_mtok": 12500, "output_per_mtok": 12500}}
    )
    made = await http.post(
        f"{gw_.http_url}/admin/keys", headers=auth(), json={"name": "g", "monthly_budget_usd": 0.15}
    )
    key = {"authorization": f"Bearer {made.json()['key']}"}
    request = gw.ChatRequest(
        model="echo-1", messages=[gw.Message(role="user", content="hi")], max_tokens=1
    )

    async def go(metadata: dict[str, str], req: gw.ChatRequest) -> Any:
        channel = Channel("127.0.0.1", gw_.grpc_port)
        try:
            return await gateway_grpc.GatewayStub(channel).ChatComplete(req, metadata=metadata)
        finally:
            channel.close()

    assert (await on_asyncio(partial(go, key, request))).usage.completion_tokens == 1
    with pytest.raises(GRPCError) as broke:  # $0.10 spent of $0.15: the next does not fit
        await on_asyncio(partial(go, key, request))
    assert broke.value.status == Status.RESOURCE_EXHAUSTED
    with pytest.raises(GRPCError) as denied:  # a virtual key is not the admin key
        await call(gw_.grpc_port, "GetStatus", pb.GetStatusRequest(), metadata=key)
    assert denied.value.status == Status.PERMISSION_DENIED
    with pytest.raises(GRPCError) as missing:
        await on_asyncio(partial(go, ADMIN, gw.ChatRequest(model="nope", messages=HI)))
    assert missing.value.status == Status.NOT_FOUND


async def test_cancelling_a_grpc_stream_cancels_the_upstream(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI(reply="word " * 100)
    fake.chunk_delay_s = 0.05
    base = await start_fake(nursery, fake)
    gw_ = await start_gateway(
        deployments=[{"name": "up", "type": "openai", "base_url": base, "models": ["m"]}]
    )

    async def go() -> None:
        channel = Channel("127.0.0.1", gw_.grpc_port)
        try:
            async with gateway_grpc.GatewayStub(channel).ChatStream.open(metadata=ADMIN) as s:
                await s.send_message(gw.ChatRequest(model="m", messages=HI), end=True)
                await s.recv_message()
                await s.cancel()
        finally:
            channel.close()

    await on_asyncio(go)
    with trio.fail_after(3):  # 100 chunks x 0.05 s would take 5 s
        await fake.wait_disconnect()
    with trio.fail_after(3):
        while gw_.services.drain.in_flight:
            await trio.sleep(0.02)


async def test_interop_with_grpcio(start_gateway: StartGateway) -> None:
    """A second gRPC implementation (grpcio, generated stubs) talks to AILB unchanged."""
    gw_ = await start_gateway()

    def client() -> tuple[Any, Any]:
        with grpc.insecure_channel(f"127.0.0.1:{gw_.grpc_port}") as channel:
            meta = [("authorization", f"Bearer {ADMIN_KEY}")]
            status = module_pb2_grpc.ModuleServiceStub(channel).GetStatus(
                pb.GetStatusRequest(), metadata=meta, timeout=10
            )
            reply = gateway_pb2_grpc.GatewayStub(channel).ChatComplete(
                gw.ChatRequest(model="echo-1", messages=HI), metadata=meta, timeout=10
            )
            return status, reply

    status, reply = await trio.to_thread.run_sync(client)
    assert status.instance.module_type == t.MODULE_TYPE_AILB
    assert json.loads(reply.body_json)["choices"][0]["message"]["content"] == "hello over grpc"


async def test_a_rate_limit_set_over_grpc_limits_http_and_persists(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient() as http:
        async with trio.open_nursery() as life:
            running: Running = await life.start(run, settings)
            port, url = running.grpc_port, running.http_url
            bad = await call(
                port,
                "SetRateLimit",
                pb.SetRateLimitRequest(
                    limit=t.RateLimit(limit_id="x", target="planet:mars", requests_per_minute=1)
                ),
            )
            assert not bad.success and bad.error.details["field"] == "target"
            ok = await call(
                port,
                "SetRateLimit",
                pb.SetRateLimitRequest(
                    limit=t.RateLimit(
                        limit_id="echo-cap",
                        target="model:echo-1",
                        requests_per_minute=2,
                        enabled=True,
                    )
                ),
            )
            assert ok.success
            statuses = [
                (
                    await http.post(f"{url}/v1/chat/completions", headers=auth(), json=body)
                ).status_code
                for _ in range(3)
            ]
            assert statuses == [200, 200, 429]  # the admin key too: the model is limited
            listed = await call(
                port, "GetRateLimits", pb.GetRateLimitsRequest(target="model:echo-1")
            )
            assert [x.limit_id for x in listed.limits] == ["echo-cap"]
            running.request_shutdown()
        async with trio.open_nursery() as life:  # a restart keeps it
            running = await life.start(run, settings)
            again = await call(running.grpc_port, "GetRateLimits", pb.GetRateLimitsRequest())
            assert again.total_limits == 1
            removed = await call(
                running.grpc_port, "RemoveRateLimit", pb.RemoveRateLimitRequest(limit_id="echo-cap")
            )
            assert removed.success
            answers = [
                (
                    await http.post(
                        f"{running.http_url}/v1/chat/completions", headers=auth(), json=body
                    )
                ).status_code
                for _ in range(3)
            ]
            assert answers == [200, 200, 200]
            running.request_shutdown()


async def test_routes_over_grpc(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    gw_ = await start_gateway(ECHO_MODELS="echo-1,echo-2", aliases={"yaml-alias": ["echo/echo-1"]})
    port = gw_.grpc_port
    listed = await call(port, "GetRoutes", pb.GetRoutesRequest())
    assert [r.route_id for r in listed.routes] == ["echo-1", "echo-2", "yaml-alias"]
    assert listed.routes[2].metadata["source"] == "config"
    assert listed.routes[2].destination_pattern == "echo/echo-1"
    bad = await call(
        port,
        "UpdateRoutes",
        pb.UpdateRoutesRequest(routes=[t.Route(route_id="smart", destination_pattern="nowhere/m")]),
    )
    assert not bad.success and bad.error.code == t.STATUS_CODE_INVALID_ARGUMENT
    ok = await call(
        port,
        "UpdateRoutes",
        pb.UpdateRoutesRequest(
            routes=[
                t.Route(
                    route_id="smart",
                    destination_pattern="echo/echo-2",
                    metadata={"strategy": "failover"},
                )
            ]
        ),
    )
    assert ok.success and ok.routes_updated == 1
    answer = await http.post(
        f"{gw_.http_url}/v1/chat/completions",
        headers=auth(),
        json={"model": "smart", "messages": [{"role": "user", "content": "via a runtime route"}]},
    )
    assert answer.status_code == 200 and answer.headers["x-ailb-model"] == "echo/echo-2"
    query = t.Query(filters=[t.Filter(field="metadata.source", operator="eq", value="runtime")])
    runtime_only = await call(port, "GetRoutes", pb.GetRoutesRequest(query=query))
    assert [r.route_id for r in runtime_only.routes] == ["smart"]
    assert runtime_only.routes[0].metadata["strategy"] == "failover"
    paged = await call(
        port,
        "GetRoutes",
        pb.GetRoutesRequest(
            query=t.Query(
                sort_by="route_id", sort_desc=True, pagination=t.Pagination(page=2, page_size=2)
            )
        ),
    )
    assert [r.route_id for r in paged.routes] == ["echo-2", "echo-1"]  # yaml-alias, smart first
    assert (paged.pagination.total_items, paged.pagination.total_pages) == (4, 2)
    assert (await call(port, "DeleteRoute", pb.DeleteRouteRequest(route_id="smart"))).success
    gone = await http.post(
        f"{gw_.http_url}/v1/chat/completions",
        headers=auth(),
        json={"model": "smart", "messages": [{"role": "user", "content": "x"}]},
    )
    assert gone.status_code == 404
    refused = await call(port, "DeleteRoute", pb.DeleteRouteRequest(route_id="yaml-alias"))
    assert not refused.success and refused.error.code == t.STATUS_CODE_NOT_FOUND


async def test_config_over_grpc(tmp_path: Path, http: httpx.AsyncClient) -> None:
    config = tmp_path / "ailb.yaml"
    config.write_text("ECHO_MODELS: echo-1\n")
    settings = make_settings(tmp_path)
    from dataclasses import replace

    from ailb.config.settings import load_settings

    settings = replace(settings, config_path=config)

    def load() -> Settings:
        loaded = load_settings(str(config), {})
        return replace(settings, deployments=loaded.deployments)

    async with trio.open_nursery() as life:
        running: Running = await life.start(partial(run, settings, load=load))
        port = running.grpc_port
        effective = (await call(port, "GetConfig", pb.GetConfigRequest())).configs[0]
        shown = json.loads(effective.config_data)
        assert shown["admin_key"] == "***6789"  # masked
        assert effective.checksum == __import__("hashlib").sha256(
            effective.config_data).hexdigest()
        with pytest.raises(GRPCError) as plaintext:  # the raw file may hold keys: TLS only
            await call(port, "GetConfig", pb.GetConfigRequest(config_type="yaml"))
        assert plaintext.value.status == Status.PERMISSION_DENIED
        config.chmod(0o600)
        invalid = await call(port, "UpdateConfig", pb.UpdateConfigRequest(
            config=t.ConfigUpdate(config_data=b"ROUTING_STRATEGY: fastest\n"),
            validate_only=True))
        assert not invalid.validation_passed and "ROUTING_STRATEGY" in invalid.validation_errors[0]
        valid = await call(port, "UpdateConfig", pb.UpdateConfigRequest(
            config=t.ConfigUpdate(config_data=b"ECHO_MODELS: echo-1,echo-9\n"),
            validate_only=True))
        assert valid.validation_passed and config.read_text() == "ECHO_MODELS: echo-1\n"
        applied = await call(port, "UpdateConfig", pb.UpdateConfigRequest(
            config=t.ConfigUpdate(config_data=b"ECHO_MODELS: echo-1,echo-9\n")))
        assert applied.success and "echo-9" in config.read_text()
        assert config.stat().st_mode & 0o777 == 0o600  # the file keeps its mode
        models = (await http.get(f"{running.http_url}/v1/models", headers=auth())).json()
        assert "echo-9" in [m["id"] for m in models["data"]]
        running.request_shutdown()


async def test_blue_green_traffic_over_grpc(start_gateway: StartGateway,
                                            http: httpx.AsyncClient) -> None:
    gw_ = await start_gateway(ROUTING_STRATEGY="round_robin", deployments=[
        {"name": "blue", "type": "echo", "models": ["m"]},
        {"name": "green", "type": "echo", "models": ["m"]}])
    port = gw_.grpc_port

    async def served(n: int = 4) -> set[str]:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        return {(await http.post(f"{gw_.http_url}/v1/chat/completions", headers=auth(),
                                 json=body)).headers["x-ailb-deployment"] for _ in range(n)}

    assert await served() == {"blue", "green"}
    promoted = await call(port, "PromoteVersion", pb.PromoteVersionRequest(version="green",
                                                                           immediate=True))
    assert promoted.success and await served() == {"green"}
    active = await call(port, "GetActiveVersion", pb.GetActiveVersionRequest())
    assert active.active_version == "green"
    assert dict(active.version_weights) == {"blue": 0, "green": 100}
    back = await call(port, "Rollback", pb.RollbackRequest())
    assert back.success and back.previous_version == "green"
    assert await served() == {"blue", "green"}
    canary = await call(port, "SetTrafficWeight", pb.SetTrafficWeightRequest(version="green",
                                                                              weight=10))
    assert canary.success and canary.current_config.canary_enabled
    assert canary.current_config.canary_percent == 10
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    shares = [(await http.post(f"{gw_.http_url}/v1/chat/completions", headers=auth(),
                               json=body)).headers["x-ailb-deployment"] for _ in range(110)]
    assert shares.count("green") == 10  # 10 against blue's 100: round robin is exact
    unknown = await call(port, "SetTrafficWeight", pb.SetTrafficWeightRequest(version="red",
                                                                               weight=5))
    assert not unknown.success and unknown.error.details["field"] == "version"


def _make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    def run_openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run_openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run_openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                    "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run_openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-CAcreateserial", "-days", "1", "-out", f"{name}.pem",
                    *(["-extfile", "san.cnf"] if name == "server" else []))
    return {n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem",
                                    "client.key")}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_mtls(start_gateway: StartGateway, tmp_path: Path) -> None:
    pki = _make_pki(tmp_path)
    gw_ = await start_gateway(grpc={"tls_cert": str(pki["server.pem"]),
                                    "tls_key": str(pki["server.key"]),
                                    "client_ca": str(pki["ca.pem"])})

    def status(with_client_cert: bool) -> Any:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki["ca.pem"].read_bytes(),
            private_key=pki["client.key"].read_bytes() if with_client_cert else None,
            certificate_chain=pki["client.pem"].read_bytes() if with_client_cert else None)
        with grpc.secure_channel(f"127.0.0.1:{gw_.grpc_port}", credentials) as channel:
            return module_pb2_grpc.ModuleServiceStub(channel).GetStatus(
                pb.GetStatusRequest(), metadata=[("authorization", f"Bearer {ADMIN_KEY}")],
                timeout=10)

    assert (await trio.to_thread.run_sync(status, True)).instance.module_type == \
        t.MODULE_TYPE_AILB
    with pytest.raises(grpc.RpcError):
        await trio.to_thread.run_sync(status, False)  # no client certificate: refused


async def test_grpcio_calls_every_module_rpc(start_gateway: StartGateway) -> None:
    """A client generated independently (grpcio) calls every ModuleService RPC and gets an
    answer of the contract's type, or a gRPC status: never a broken call."""
    gw_ = await start_gateway()
    service = pb.DESCRIPTOR.services_by_name["ModuleService"]
    meta = [("authorization", f"Bearer {ADMIN_KEY}")]

    def every_rpc() -> dict[str, str]:
        outcome: dict[str, str] = {}
        with grpc.insecure_channel(f"127.0.0.1:{gw_.grpc_port}") as channel:
            stub = module_pb2_grpc.ModuleServiceStub(channel)
            for method in service.methods:
                if method.name == "Shutdown":
                    continue  # last, below
                request = getattr(pb, method.input_type.name)()
                if method.name == "UpdateConfig":  # check only: never write a file here
                    request = pb.UpdateConfigRequest(validate_only=True)
                call_ = getattr(stub, method.name)
                if method.server_streaming:
                    replies = call_(request, metadata=meta, timeout=10)
                    reply = next(iter(replies))
                    replies.cancel()
                else:
                    reply = call_(request, metadata=meta, timeout=10)
                assert type(reply).__name__ == method.output_type.name
                outcome[method.name] = "ok"
            down = stub.Shutdown(pb.ShutdownRequest(graceful=True, timeout_seconds=2),
                                 metadata=meta, timeout=10)
            outcome["Shutdown"] = "ok" if down.success else "failed"
        return outcome

    outcome = await trio.to_thread.run_sync(every_rpc)
    assert set(outcome) == {m.name for m in service.methods}
    assert set(outcome.values()) == {"ok"}



async def test_bad_grpc_input_is_invalid_argument(start_gateway: StartGateway) -> None:
    gw_ = await start_gateway()
    with pytest.raises(GRPCError) as sort:
        await call(gw_.grpc_port, "GetRoutes", pb.GetRoutesRequest(query=t.Query(
            sort_by="__class__")))
    assert sort.value.status == Status.INVALID_ARGUMENT

    async def embed() -> Any:
        channel = Channel("127.0.0.1", gw_.grpc_port)
        try:
            return await gateway_grpc.GatewayStub(channel).Embed(
                gw.EmbedRequest(model="echo-1", body_json="[1, 2"), metadata=ADMIN)
        finally:
            channel.close()

    with pytest.raises(GRPCError) as bad_json:
        await on_asyncio(embed)
    assert bad_json.value.status == Status.INVALID_ARGUMENT


async def test_grpc_streams_past_the_grace_period_end_with_unavailable(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake = FakeOpenAI(reply="word " * 200)
    fake.chunk_delay_s = 0.05
    base = await start_fake(nursery, fake)
    settings = make_settings(tmp_path, server={"grace_s": 0.3, "unready_delay_s": 0},
                             deployments=[{"name": "up", "type": "openai", "base_url": base,
                                           "models": ["m"]}])
    outcome: list[Any] = []
    async with trio.open_nursery() as life:
        running: Running = await life.start(run, settings)

        async def go() -> None:
            channel = Channel("127.0.0.1", running.grpc_port)
            try:
                async with gateway_grpc.GatewayStub(channel).ChatStream.open(
                        metadata=ADMIN) as stream:
                    await stream.send_message(gw.ChatRequest(model="m", messages=HI), end=True)
                    await stream.recv_message()
                    running.request_shutdown()
                    async for _ in stream:
                        pass
                outcome.append("completed")
            except GRPCError as exc:
                outcome.append(exc.status)
            finally:
                channel.close()

        with trio.fail_after(10):
            await on_asyncio(go)
    assert outcome == [Status.UNAVAILABLE]  # a status, not a dropped connection
