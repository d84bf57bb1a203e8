"""The standard gRPC protocols AILB serves besides its own: ``grpc.health.v1`` and server
reflection (``grpc.reflection.v1`` and ``v1alpha``), as message classes of a private descriptor
pool.

Why not grpclib's (or grpcio's) generated modules: both register these files in protobuf's
default pool under their own file names, and the two cannot be loaded in one process
(``duplicate symbol 'grpc.health.v1.HealthCheckRequest'``). Building the files here, in a pool
of our own, lets a process that embeds AILB (a test, a tool) import either family of client
modules beside it. Pure data: no I/O.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
STRING, INT32, BYTES, ENUM, MESSAGE = F.TYPE_STRING, F.TYPE_INT32, F.TYPE_BYTES, F.TYPE_ENUM, \
    F.TYPE_MESSAGE
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED

HEALTH_FILE = "grpc/health/v1/health.proto"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_FILES = {"grpc.reflection.v1": "grpc/reflection/v1/reflection.proto",
                    "grpc.reflection.v1alpha": "grpc/reflection/v1alpha/reflection.proto"}

# ServingStatus of grpc.health.v1.HealthCheckResponse
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3


def _field(message: descriptor_pb2.DescriptorProto, name: str, number: int, kind: int,
           type_name: str = "", label: int = OPTIONAL, oneof: int | None = None) -> None:
    field = message.field.add(name=name, number=number, type=kind, label=label,
                              json_name=_camel(name))
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _method(service: descriptor_pb2.ServiceDescriptorProto, name: str, request: str,
            reply: str, client_streaming: bool = False, server_streaming: bool = False) -> None:
    service.method.add(name=name, input_type=request, output_type=reply,
                       client_streaming=client_streaming, server_streaming=server_streaming)


def health_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/health/v1/health.proto: Check, Watch and List."""
    pkg = ".grpc.health.v1."
    file = descriptor_pb2.FileDescriptorProto(name=HEALTH_FILE, package="grpc.health.v1",
                                              syntax="proto3")
    request = file.message_type.add(name="HealthCheckRequest")
    _field(request, "service", 1, STRING)
    response = file.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status.value.add(name=name, number=number)
    _field(response, "status", 1, ENUM, pkg + "HealthCheckResponse.ServingStatus")
    file.message_type.add(name="HealthListRequest")
    listed = file.message_type.add(name="HealthListResponse")
    entry = listed.nested_type.add(name="StatusesEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, STRING)
    _field(entry, "value", 2, MESSAGE, pkg + "HealthCheckResponse")
    _field(listed, "statuses", 1, MESSAGE, pkg + "HealthListResponse.StatusesEntry", REPEATED)
    service = file.service.add(name="Health")
    _method(service, "Check", pkg + "HealthCheckRequest", pkg + "HealthCheckResponse")
    _method(service, "List", pkg + "HealthListRequest", pkg + "HealthListResponse")
    _method(service, "Watch", pkg + "HealthCheckRequest", pkg + "HealthCheckResponse",
            server_streaming=True)
    return file


def reflection_file(package: str) -> descriptor_pb2.FileDescriptorProto:
    """The reflection protocol of ``package`` (v1 and v1alpha differ only in the package)."""
    pkg = f".{package}."
    file = descriptor_pb2.FileDescriptorProto(name=REFLECTION_FILES[package], package=package,
                                              syntax="proto3")
    request = file.message_type.add(name="ServerReflectionRequest")
    request.oneof_decl.add(name="message_request")
    _field(request, "host", 1, STRING)
    _field(request, "file_by_filename", 3, STRING, oneof=0)
    _field(request, "file_containing_symbol", 4, STRING, oneof=0)
    _field(request, "file_containing_extension", 5, MESSAGE, pkg + "ExtensionRequest", oneof=0)
    _field(request, "all_extension_numbers_of_type", 6, STRING, oneof=0)
    _field(request, "list_services", 7, STRING, oneof=0)
    extension = file.message_type.add(name="ExtensionRequest")
    _field(extension, "containing_type", 1, STRING)
    _field(extension, "extension_number", 2, INT32)
    response = file.message_type.add(name="ServerReflectionResponse")
    response.oneof_decl.add(name="message_response")
    _field(response, "valid_host", 1, STRING)
    _field(response, "original_request", 2, MESSAGE, pkg + "ServerReflectionRequest")
    _field(response, "file_descriptor_response", 4, MESSAGE, pkg + "FileDescriptorResponse",
           oneof=0)
    _field(response, "all_extension_numbers_response", 5, MESSAGE,
           pkg + "ExtensionNumberResponse", oneof=0)
    _field(response, "list_services_response", 6, MESSAGE, pkg + "ListServiceResponse",
           oneof=0)
    _field(response, "error_response", 7, MESSAGE, pkg + "ErrorResponse", oneof=0)
    files = file.message_type.add(name="FileDescriptorResponse")
    _field(files, "file_descriptor_proto", 1, BYTES, label=REPEATED)
    numbers = file.message_type.add(name="ExtensionNumberResponse")
    _field(numbers, "base_type_name", 1, STRING)
    _field(numbers, "extension_number", 2, INT32, label=REPEATED)
    services = file.message_type.add(name="ListServiceResponse")
    _field(services, "service", 1, MESSAGE, pkg + "ServiceResponse", REPEATED)
    service_name = file.message_type.add(name="ServiceResponse")
    _field(service_name, "name", 1, STRING)
    error = file.message_type.add(name="ErrorResponse")
    _field(error, "error_code", 1, INT32)
    _field(error, "error_message", 2, STRING)
    service = file.service.add(name="ServerReflection")
    _method(service, "ServerReflectionInfo", pkg + "ServerReflectionRequest",
            pkg + "ServerReflectionResponse", client_streaming=True, server_streaming=True)
    return file


class StdProtos:
    """The health and reflection message classes, from a pool of their own."""

    def __init__(self) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self.pool.Add(health_file())
        for package in REFLECTION_FILES:
            self.pool.Add(reflection_file(package))

    def message(self, full_name: str) -> Any:
        """The message class of ``full_name`` (e.g. ``grpc.health.v1.HealthCheckRequest``)."""
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))
