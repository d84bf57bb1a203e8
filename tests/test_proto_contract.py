"""The generated marchproxy protos match the wire contract, field for field.

The contract is ``proto/marchproxy-module-service.md``, the repository's vendored copy of
the family's ``shared/spec/marchproxy-module-service.md``. Every message field (number,
name, type), enum value and RPC (name, request, response, streaming) listed there is
compared with the descriptors of the committed generated code, in both directions (nothing
missing, nothing extra). A missing vendored copy fails these tests. Only the drift check
reads outside the repository: when the shared spec sits beside the repository, the vendored
copy must equal it; elsewhere (a lone clone in CI) that one check skips.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
)
from grpclib.const import Cardinality

from ailb.grpc_api.gen.ailb.v1 import gateway_grpc, gateway_pb2
from ailb.grpc_api.gen.marchproxy import module_grpc, module_pb2, types_pb2
from tests.grpc_stubs.marchproxy import module_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "proto" / "marchproxy-module-service.md"  # vendored; see its header comment
SHARED_SPEC = ROOT.parent / "shared" / "spec" / "marchproxy-module-service.md"
PACKAGE = "marchproxy"
SERVICE = f"{PACKAGE}.ModuleService"

SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_BYTES: "bytes",
}


@dataclass(frozen=True)
class Rpc:
    name: str
    request: str
    response: str
    server_streaming: bool


@dataclass(frozen=True)
class Spec:
    rpcs: tuple[Rpc, ...]
    messages: dict[str, dict[int, tuple[str, str]]]  # name -> number -> (type, field name)
    enums: dict[str, dict[int, str]]  # name -> number -> value name


def parse_spec(text: str) -> Spec:
    rpcs = tuple(
        Rpc(name, request, response, bool(stream))
        for name, request, stream, response in re.findall(
            r"^\|\s*(\w+)\s*\|\s*(\w+)\s*\|\s*(stream\s+)?(\w+)\s*\|\s*$", text, re.MULTILINE)
        if name != "RPC")
    messages: dict[str, dict[int, tuple[str, str]]] = {}
    enums: dict[str, dict[int, str]] = {}
    for kind, name, body in re.findall(r"^### (enum )?(\w+)\s*\n```\n(.*?)^```", text,
                                       re.MULTILINE | re.DOTALL):
        lines = [line for line in body.splitlines() if line.strip()]
        assert lines, f"spec block {name} is empty"
        if kind:
            values: dict[int, str] = {}
            for line in lines:
                match = re.fullmatch(r"\s*(\d+)\s+([A-Z0-9_]+)\s*", line)
                assert match, f"unparsed spec line in enum {name}: {line!r}"
                values[int(match[1])] = match[2]
            enums[name] = values
        else:
            fields: dict[int, tuple[str, str]] = {}
            for line in lines:
                match = re.fullmatch(r"\s*(\d+)\s+(.+?)\s+(\w+)\s*", line)
                assert match, f"unparsed spec line in message {name}: {line!r}"
                assert int(match[1]) not in fields, f"{name}: field {match[1]} twice in the spec"
                fields[int(match[1])] = (match[2], match[3])
            messages[name] = fields
    return Spec(rpcs, messages, enums)


@pytest.fixture(scope="module")
def spec() -> Spec:
    assert SPEC.is_file(), f"vendored wire contract missing: {SPEC}"
    parsed = parse_spec(SPEC.read_text(encoding="utf-8"))
    # A spec whose layout changed must fail loudly, not compare nothing.
    assert parsed.rpcs and parsed.messages and parsed.enums, "spec parsed to nothing"
    return parsed


def vendored_body(text: str) -> str:
    """The vendored spec without its leading ``<!-- ... -->`` provenance comment."""
    match = re.match(r"<!--.*?-->\n", text, re.DOTALL)
    assert match, "the vendored spec lost its provenance comment"
    return text[match.end():]


def test_vendored_spec_matches_the_shared_one() -> None:
    if not SHARED_SPEC.is_file():
        pytest.skip(f"no shared spec beside the repository ({SHARED_SPEC}) to compare with")
    assert vendored_body(SPEC.read_text(encoding="utf-8")) == SHARED_SPEC.read_text(
        encoding="utf-8"), f"{SPEC} has drifted from {SHARED_SPEC}: copy it over again"


def spec_type(type_text: str, enums: set[str]) -> str:
    """A spec type (``repeated Route``, ``map<string, int32>``...) in canonical form."""
    text = " ".join(type_text.split())
    if text.startswith("repeated "):
        return "repeated " + spec_type(text.removeprefix("repeated "), enums)
    map_match = re.fullmatch(r"map<\s*(\w+)\s*,\s*([\w.]+)\s*>", text)
    if map_match:
        return f"map<{spec_type(map_match[1], enums)}, {spec_type(map_match[2], enums)}>"
    if text in SCALARS.values():
        return text
    full = text if "." in text else f"{PACKAGE}.{text}"
    return f"enum {full}" if text in enums else f"message {full}"


def field_type(field: FieldDescriptor) -> str:
    """The descriptor's type of ``field`` in the same canonical form."""
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], message.fields_by_name["value"]
        return f"map<{field_type(key)}, {field_type(value)}>"
    if field.type in SCALARS:
        base = SCALARS[field.type]
    elif field.type == FieldDescriptor.TYPE_ENUM:
        base = f"enum {field.enum_type.full_name}"
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        base = f"message {message.full_name}"
    else:  # groups
        base = f"type#{field.type}"
    return f"repeated {base}" if field.is_repeated else base


def file_proto(file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb)


def all_messages() -> dict[str, Descriptor]:
    return {**types_pb2.DESCRIPTOR.message_types_by_name,
            **module_pb2.DESCRIPTOR.message_types_by_name}


def all_enums() -> dict[str, EnumDescriptor]:
    return {**types_pb2.DESCRIPTOR.enum_types_by_name,
            **module_pb2.DESCRIPTOR.enum_types_by_name}


def test_files_are_proto3_package_marchproxy() -> None:
    for module, name in ((types_pb2, "marchproxy/types.proto"),
                         (module_pb2, "marchproxy/module.proto")):
        proto = file_proto(module.DESCRIPTOR)
        assert (proto.name, proto.package, proto.syntax) == (name, PACKAGE, "proto3")
    assert list(file_proto(module_pb2.DESCRIPTOR).dependency) == [
        "google/protobuf/timestamp.proto", "marchproxy/types.proto"]


def test_messages_match_the_contract(spec: Spec) -> None:
    generated = all_messages()
    assert sorted(generated) == sorted(spec.messages), "message set differs from the contract"
    enums = set(spec.enums)
    problems: list[str] = []
    for name, fields in spec.messages.items():
        message = generated[name]
        want = {number: (spec_type(type_text, enums), field_name)
                for number, (type_text, field_name) in fields.items()}
        have = {field.number: (field_type(field), field.name) for field in message.fields}
        for number in sorted(want.keys() | have.keys()):
            if want.get(number) != have.get(number):
                problems.append(f"{name} field {number}: contract {want.get(number)}, "
                                f"generated {have.get(number)}")
        # Plain proto3 fields only: no `optional` presence, no oneofs, no nested types
        # beyond the map entries.
        proto = message_proto(name)
        problems += [f"{name}.{f.name} is proto3 optional" for f in proto.field
                     if f.proto3_optional]
        if proto.oneof_decl:
            problems.append(f"{name} has a oneof")
        problems += [f"{name} nests {nested.name}" for nested in proto.nested_type
                     if not nested.options.map_entry]
        problems += [f"{name} nests enum {nested.name}" for nested in proto.enum_type]
    assert not problems, "\n".join(problems)


def message_proto(name: str) -> descriptor_pb2.DescriptorProto:
    for module in (types_pb2, module_pb2):
        for message in file_proto(module.DESCRIPTOR).message_type:
            if message.name == name:
                return message
    raise AssertionError(f"no message {name}")


def test_enums_match_the_contract(spec: Spec) -> None:
    generated = all_enums()
    assert sorted(generated) == sorted(spec.enums), "enum set differs from the contract"
    for name, values in spec.enums.items():
        have = {value.number: value.name for value in generated[name].values}
        assert have == values, f"enum {name}"


def test_messages_sit_in_the_contract_files(spec: Spec) -> None:
    """Service request/response messages in module.proto; everything else in types.proto."""
    io = {rpc.request for rpc in spec.rpcs} | {rpc.response for rpc in spec.rpcs}
    assert set(module_pb2.DESCRIPTOR.message_types_by_name) == io
    assert set(types_pb2.DESCRIPTOR.message_types_by_name) == set(spec.messages) - io
    assert set(types_pb2.DESCRIPTOR.enum_types_by_name) == set(spec.enums)
    assert not module_pb2.DESCRIPTOR.enum_types_by_name


def test_rpcs_match_the_contract(spec: Spec) -> None:
    service = module_pb2.DESCRIPTOR.services_by_name["ModuleService"]
    assert service.full_name == SERVICE
    want = {rpc.name: (f"{PACKAGE}.{rpc.request}", f"{PACKAGE}.{rpc.response}",
                       False, rpc.server_streaming) for rpc in spec.rpcs}
    have = {method.name: (method.input_type.full_name, method.output_type.full_name,
                          method.client_streaming, method.server_streaming)
            for method in service.methods}
    assert have == want
    assert list(have) == list(want), "RPC order differs from the contract"
    assert list(module_pb2.DESCRIPTOR.services_by_name) == ["ModuleService"]
    assert not types_pb2.DESCRIPTOR.services_by_name


def _concrete(base: type) -> Any:
    """An instance of a generated grpclib service base, its abstract RPCs stubbed."""
    async def rpc(self: Any, stream: Any) -> None:
        raise NotImplementedError

    stubs = {name: rpc for name in base.__abstractmethods__}  # type: ignore[attr-defined]
    return type(f"Concrete{base.__name__}", (base,), stubs)()


def test_grpclib_method_paths(spec: Spec) -> None:
    mapping = _concrete(module_grpc.ModuleServiceBase).__mapping__()
    assert set(mapping) == {f"/{SERVICE}/{rpc.name}" for rpc in spec.rpcs}
    for rpc in spec.rpcs:
        handler = mapping[f"/{SERVICE}/{rpc.name}"]
        cardinality = Cardinality.UNARY_STREAM if rpc.server_streaming else Cardinality.UNARY_UNARY
        assert handler.cardinality == cardinality, rpc.name
        assert handler.request_type is getattr(module_pb2, rpc.request), rpc.name
        assert handler.reply_type is getattr(module_pb2, rpc.response), rpc.name
    stub = module_grpc.ModuleServiceStub(channel=None)
    for rpc in spec.rpcs:
        assert getattr(stub, rpc.name).name == f"/{SERVICE}/{rpc.name}"


class _RecordingChannel:
    """Enough of a grpc.Channel for the grpcio stub constructor."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def __getattr__(self, kind: str) -> Any:
        def method(path: str, **_: Any) -> str:
            self.paths[path] = kind
            return path
        return method


def test_grpcio_stub_method_paths(spec: Spec) -> None:
    channel = _RecordingChannel()
    module_pb2_grpc.ModuleServiceStub(channel)
    assert channel.paths == {
        f"/{SERVICE}/{rpc.name}": "unary_stream" if rpc.server_streaming else "unary_unary"
        for rpc in spec.rpcs}


def test_gateway_service_shape() -> None:
    proto = file_proto(gateway_pb2.DESCRIPTOR)
    assert (proto.package, proto.syntax) == ("ailb.v1", "proto3")
    mapping = _concrete(gateway_grpc.GatewayBase).__mapping__()
    want = {
        "/ailb.v1.Gateway/ChatComplete": (Cardinality.UNARY_UNARY, gateway_pb2.ChatRequest,
                                          gateway_pb2.ChatResponse),
        "/ailb.v1.Gateway/ChatStream": (Cardinality.UNARY_STREAM, gateway_pb2.ChatRequest,
                                        gateway_pb2.ChatChunk),
        "/ailb.v1.Gateway/Embed": (Cardinality.UNARY_UNARY, gateway_pb2.EmbedRequest,
                                   gateway_pb2.EmbedResponse),
    }
    assert {path: (h.cardinality, h.request_type, h.reply_type)
            for path, h in mapping.items()} == want


def test_roundtrip_through_the_wire_format() -> None:
    response = module_pb2.GetStatusResponse(
        instance=types_pb2.ModuleInstance(instance_id="ailb-1",
                                          module_type=types_pb2.MODULE_TYPE_AILB),
        status=types_pb2.HEALTH_STATUS_HEALTHY, details={"k": "v"})
    response.last_updated.FromSeconds(1_700_000_000)
    assert module_pb2.GetStatusResponse.FromString(response.SerializeToString()) == response


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None,
                    reason="grpcio-tools not installed")
def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
