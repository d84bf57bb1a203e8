"""Property-based fuzzing of every gRPC request: each RPC of the Gateway and ModuleService
services gets request messages filled field by field from the descriptors (ints at their
width's edges, NaN and infinities, any text, unknown enum values, nested messages, maps),
plus a chat ``body_json`` with bad fields, and bytes that are no valid message at all (a
string field holding invalid UTF-8). Asserts: never INTERNAL or UNKNOWN (gRPC's 5xx), and
the server still answers. Driven by grpcio, a second gRPC implementation, over a real port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ailb.grpc_api.gen.ailb.v1 import gateway_pb2
from ailb.grpc_api.gen.marchproxy import module_pb2
from tests.conftest import ADMIN_KEY
from tests.fuzz_server import MODEL, FuzzServer, start

# Shutdown would end the server under test; StreamMetrics streams until cancelled.
SKIPPED = {"Shutdown", "StreamMetrics"}
FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
RPCS = [(service.full_name, method) for file in (gateway_pb2, module_pb2)
        for service in file.DESCRIPTOR.services_by_name.values()
        for method in service.methods if method.name not in SKIPPED]
_INT = {d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
        d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
        d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
        d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
        d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
        d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
        d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
        d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
        d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
        d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
        d.FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1)}
text = st.one_of(st.text(st.characters(exclude_categories=["Cs"]), max_size=16),
                 st.sampled_from(["", MODEL, "echo", "*", "x" * 3000, "\x00", "ailb-fuzz"]))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    yield from start(tmp_path_factory.mktemp("grpc"))


@pytest.fixture(scope="module")
def channel(server: FuzzServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as opened:
        yield opened


def scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT:
        low, high = _INT[kind]
        return st.one_of(st.integers(low, high), st.sampled_from([low, high, 0, -1, 1]))
    if kind == d.FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if kind == d.FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=32)
    return text


@st.composite
def messages(draw: st.DrawFn, descriptor: d.Descriptor, depth: int = 0) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if depth > 3 or not draw(st.booleans()):
            continue
        target = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            keys = draw(st.lists(scalar(entry.fields_by_name["key"]), max_size=3))
            for key in keys:
                if value_field.message_type is not None:
                    target[key].CopyFrom(draw(messages(value_field.message_type, depth + 1)))
                else:
                    target[key] = draw(scalar(value_field))
        elif field.is_repeated:
            if entry is not None:
                for item in draw(st.lists(messages(entry, depth + 1), max_size=3)):
                    target.add().CopyFrom(item)
            else:
                target.extend(draw(st.lists(scalar(field), max_size=3)))
        elif entry is not None:
            target.CopyFrom(draw(messages(entry, depth + 1)))
        else:
            setattr(message, field.name, draw(scalar(field)))
    return message


def call(channel: grpc.Channel, service: str, method: d.MethodDescriptor,
         payload: bytes) -> grpc.StatusCode:
    path = f"/{service}/{method.name}"
    meta = [("authorization", f"Bearer {ADMIN_KEY}")]
    try:
        if method.server_streaming:
            for _ in channel.unary_stream(path)(payload, metadata=meta, timeout=30):
                pass
        else:
            channel.unary_unary(path)(payload, metadata=meta, timeout=30)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        assert code not in FAILURES, (path, code, error.details(), payload[:300])
        return code
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("service", "method"), RPCS, ids=[m.name for _, m in RPCS])
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_request_message(channel: grpc.Channel, service: str, method: d.MethodDescriptor,
                             data: st.DataObject) -> None:
    request = data.draw(messages(method.input_type), label="request")
    call(channel, service, method, request.SerializeToString())


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from(["max_tokens", "temperature", "stream", "messages", "stop",
                              "tools", "n", "top_p", "stream_options", "seed"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                       text, st.lists(st.integers(), max_size=2),
                       st.dictionaries(text, st.integers(), max_size=2)))
def test_body_json_with_a_bad_field(channel: grpc.Channel, field: str, value: Any) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], field: value}
    gateway = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
    for name in ("ChatComplete", "ChatStream"):
        payload = gateway_pb2.ChatRequest(body_json=json.dumps(body)).SerializeToString()
        call(channel, gateway.full_name, gateway.methods_by_name[name], payload)


def test_a_lone_surrogate_in_body_json_is_invalid_argument(channel: grpc.Channel) -> None:
    gateway = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
    body = '{"model": "echo-1", "messages": [{"role": "user", "content": "a\\ud800"}]}'
    payload = gateway_pb2.ChatRequest(body_json=body).SerializeToString()
    code = call(channel, gateway.full_name, gateway.methods_by_name["ChatComplete"], payload)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("payload", [
    b"\x0a\x02\xff\xfe",  # field 1 (a string) holding invalid UTF-8
    b"\x0a\xff\xff\xff\xff\x0f",  # a length past the end
    b"\xff" * 8,  # no valid tag
])
def test_bytes_that_are_no_message_are_invalid_argument(channel: grpc.Channel,
                                                        payload: bytes) -> None:
    """Every RPC answers without a failure status (a message whose field 1 is no string reads
    the first payload as an unknown field); a chat, whose field 1 is a string, is refused."""
    for service, method in RPCS:
        code = call(channel, service, method, payload)
        if method.input_type.name in ("ChatRequest", "EmbedRequest"):
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (method.name, code)


def test_still_serving(server: FuzzServer, channel: grpc.Channel) -> None:
    assert server.alive()
    gateway = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
    ok = gateway_pb2.ChatRequest(model=MODEL, messages=[gateway_pb2.Message(
        role="user", content="hi")]).SerializeToString()
    assert call(channel, gateway.full_name, gateway.methods_by_name["ChatComplete"],
                ok) == grpc.StatusCode.OK
    assert "Traceback" not in server.log.read_text()
