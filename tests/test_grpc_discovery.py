"""The gRPC port is discoverable with nothing but its number: server reflection (grpcio's
reflection client, and grpclib's v1 client) lists the services and hands out their file
descriptors, from which message classes are built at run time and the services called; the
standard ``grpc.health.v1.Health`` follows readiness and drain.

No generated AILB stub is imported here: every AILB message class comes from reflection."""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import pytest
import trio
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpclib.client import Channel
from grpclib.reflection.v1 import reflection_grpc as v1_grpc
from grpclib.reflection.v1 import reflection_pb2 as v1

from tests.conftest import ADMIN_KEY, StartGateway
from tests.test_grpc import on_asyncio

SERVED = {"ailb.v1.Gateway", "marchproxy.ModuleService", "grpc.health.v1.Health",
          "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
ADMIN = [("authorization", f"Bearer {ADMIN_KEY}")]
S = health_pb2.HealthCheckResponse


def discover_and_call(port: int) -> dict[str, Any]:
    """(blocking) What a client knowing only the port finds out and gets back."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)

        def unary(service: str, method: str, request: dict[str, Any]) -> Any:
            described = pool.FindServiceByName(service).methods_by_name[method]
            request_class = message_factory.GetMessageClass(described.input_type)
            reply_class = message_factory.GetMessageClass(described.output_type)
            call = channel.unary_unary(f"/{service}/{method}",
                                       request_serializer=request_class.SerializeToString,
                                       response_deserializer=reply_class.FromString)
            return call(request_class(**request), metadata=ADMIN, timeout=10)

        chat = unary("ailb.v1.Gateway", "ChatComplete",
                     {"model": "echo-1",
                      "messages": [{"role": "user", "content": "found by reflection"}]})
        status = unary("marchproxy.ModuleService", "GetStatus", {"instance_id": "ailb-1"})
        return {"services": services, "chat": chat, "status": status,
                "types": pool.FindMessageTypeByName(
                    "marchproxy.ModuleInstance").full_name}


async def test_reflection_lists_the_services_and_a_dynamic_client_calls_them(
        start_gateway: StartGateway) -> None:
    running = await start_gateway()
    found = await trio.to_thread.run_sync(discover_and_call, running.grpc_port)
    assert SERVED <= found["services"]
    chat = found["chat"]
    assert json.loads(chat.body_json)["choices"][0]["message"]["content"]
    assert chat.deployment and chat.request_id
    instance = found["status"].instance
    module_type = instance.DESCRIPTOR.fields_by_name["module_type"].enum_type
    assert module_type.values_by_number[instance.module_type].name == "MODULE_TYPE_AILB"
    assert found["types"] == "marchproxy.ModuleInstance"  # a dependency (types.proto) resolved


async def test_reflection_v1_answers_with_the_file_and_its_dependencies(
        start_gateway: StartGateway) -> None:
    """grpclib's own v1 client: list, a file by symbol (sent with what it imports), a file
    by name, and NOT_FOUND for a symbol the server does not serve."""
    running = await start_gateway()

    async def ask() -> list[Any]:
        channel = Channel("127.0.0.1", running.grpc_port)
        try:
            async with v1_grpc.ServerReflectionStub(channel).ServerReflectionInfo.open() as s:
                replies = []
                for request in (v1.ServerReflectionRequest(list_services=""),
                                v1.ServerReflectionRequest(
                                    file_containing_symbol="marchproxy.ModuleService"),
                                v1.ServerReflectionRequest(
                                    file_by_filename="grpc/health/v1/health.proto"),
                                v1.ServerReflectionRequest(file_containing_symbol="no.Such")):
                    await s.send_message(request)
                    replies.append(await s.recv_message())
                await s.end()
                return replies
        finally:
            channel.close()

    listed, module, health, missing = await on_asyncio(ask)
    assert {s.name for s in listed.list_services_response.service} == SERVED
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in module.file_descriptor_response.file_descriptor_proto]
    assert files[0].name == "marchproxy/module.proto"
    assert "marchproxy/types.proto" in {f.name for f in files[1:]}
    assert [m.name for m in files[0].service[0].method][:1] == ["GetStatus"]
    [health_file] = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                     for raw in health.file_descriptor_response.file_descriptor_proto]
    assert [m.name for m in health_file.service[0].method] == ["Check", "List", "Watch"]
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def check_all(port: int, names: list[str]) -> dict[str, Any]:
    """(blocking) Health Check of each name, without a key: status or the error code."""
    out: dict[str, Any] = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in names:
            try:
                out[name] = stub.Check(health_pb2.HealthCheckRequest(service=name),
                                       timeout=10).status
            except grpc.RpcError as exc:
                out[name] = exc.code()
    return out


async def test_health_check_of_the_server_and_each_service(
        start_gateway: StartGateway) -> None:
    running = await start_gateway()
    names = ["", "ailb.v1.Gateway", "marchproxy.ModuleService", "grpc.health.v1.Health",
             "no.such.Service"]
    got = await trio.to_thread.run_sync(check_all, running.grpc_port, names)
    assert got == {"": S.SERVING, "ailb.v1.Gateway": S.SERVING,
                   "marchproxy.ModuleService": S.SERVING, "grpc.health.v1.Health": S.SERVING,
                   "no.such.Service": grpc.StatusCode.NOT_FOUND}


async def test_health_says_not_serving_when_no_deployment_can_serve(
        start_gateway: StartGateway) -> None:
    """Same rule as /readyz: the only deployment has never answered a probe."""
    running = await start_gateway(deployments=[{
        "name": "gone", "type": "openai", "base_url": "http://127.0.0.1:9/v1",
        "models": ["m"]}])
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{running.http_url}/readyz")).status_code == 503
    got = await trio.to_thread.run_sync(check_all, running.grpc_port,
                                        ["", "ailb.v1.Gateway"])
    assert got == {"": S.NOT_SERVING, "ailb.v1.Gateway": S.NOT_SERVING}


async def test_watch_streams_serving_then_not_serving_at_shutdown(
        start_gateway: StartGateway) -> None:
    running = await start_gateway()
    channel = grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}")
    try:
        watches = {name: health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=name), timeout=20)
            for name in ("", "ailb.v1.Gateway", "unknown.Service")}
        first = {name: (await trio.to_thread.run_sync(next, w)).status
                 for name, w in watches.items()}
        assert first == {"": S.SERVING, "ailb.v1.Gateway": S.SERVING,
                         "unknown.Service": S.SERVICE_UNKNOWN}
        running.request_shutdown()
        await trio.sleep(0.5)  # read late: AILB has stopped, what it sent must still be there
        for name in ("", "ailb.v1.Gateway"):
            assert (await trio.to_thread.run_sync(next, watches[name])).status == \
                S.NOT_SERVING, name
        for name, watch in watches.items():  # then each call ends, its messages all read
            with pytest.raises(grpc.RpcError) as ended:
                await trio.to_thread.run_sync(next, watch)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, name
    finally:
        channel.close()
