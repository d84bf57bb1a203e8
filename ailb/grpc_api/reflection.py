"""gRPC server reflection (``grpc.reflection.v1`` and ``v1alpha``): a client holding only the
port lists the services and fetches their file descriptors (grpcurl, Postman, grpcio's
``ProtoReflectionDescriptorDatabase``...). No key is needed: the descriptors are the public
contract shipped in the release's ``proto/``.

The answers come from a descriptor pool holding exactly the files the server's services use and
their dependencies (:func:`served_pool`). As grpcio's reference server does, a file is sent
with its transitive dependencies, so a client resolves it in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpclib import Status
from grpclib.const import Cardinality, Handler

from ailb.grpc_api.std_protos import REFLECTION_FILES, StdProtos


def service_name(servicer: Any) -> str:
    path = next(iter(servicer.__mapping__()))
    return str(path.split("/")[1])


def served_pool(servicers: Iterable[Any]) -> descriptor_pool.DescriptorPool:
    """A pool with the file of every message the servicers' handlers take or give, and the
    files those import (dependencies first)."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    for servicer in servicers:
        for handler in servicer.__mapping__().values():
            add(handler.request_type.DESCRIPTOR.file)
            add(handler.reply_type.DESCRIPTOR.file)
    return pool


def _with_dependencies(file: FileDescriptor) -> list[bytes]:
    """``file`` serialized, then every file it imports, transitively (each once)."""
    out: list[bytes] = []
    seen: set[str] = set()
    todo = [file]
    while todo:
        current = todo.pop(0)
        if current.name in seen:
            continue
        seen.add(current.name)
        proto = descriptor_pb2.FileDescriptorProto()
        current.CopyToProto(proto)
        out.append(proto.SerializeToString())
        todo.extend(current.dependencies)
    return out


class Reflection:
    """One servicer answering both reflection packages from the same pool."""

    def __init__(self, protos: StdProtos, service_names: Iterable[str],
                 pool: descriptor_pool.DescriptorPool) -> None:
        self._protos = protos
        self.names = sorted({*service_names,
                              *(f"{package}.ServerReflection" for package in REFLECTION_FILES)})
        self._pool = pool

    @staticmethod
    def over(servicers: list[Any], protos: StdProtos) -> Reflection:
        """Reflection over ``servicers`` and over itself."""
        names = [service_name(s) for s in servicers]
        itself = Reflection(protos, names, descriptor_pool.DescriptorPool())
        return Reflection(protos, names, served_pool([*servicers, itself]))

    def answer(self, package: str, request: Any) -> Any:
        """The reply of ``package`` to one ServerReflectionRequest (pure)."""
        response = self._protos.message(f"{package}.ServerReflectionResponse")
        reply = response(valid_host=request.host)
        reply.original_request.CopyFrom(request)
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                for name in self.names:
                    reply.list_services_response.service.add(name=name)
            elif kind == "file_by_filename":
                reply.file_descriptor_response.file_descriptor_proto.extend(
                    _with_dependencies(self._pool.FindFileByName(request.file_by_filename)))
            elif kind == "file_containing_symbol":
                reply.file_descriptor_response.file_descriptor_proto.extend(
                    _with_dependencies(self._pool.FindFileContainingSymbol(
                        request.file_containing_symbol)))
            elif kind == "file_containing_extension":
                wanted = request.file_containing_extension
                extension = self._pool.FindExtensionByNumber(
                    self._pool.FindMessageTypeByName(wanted.containing_type),
                    wanted.extension_number)
                reply.file_descriptor_response.file_descriptor_proto.extend(
                    _with_dependencies(extension.file))
            elif kind == "all_extension_numbers_of_type":
                message = self._pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                reply.all_extension_numbers_response.base_type_name = message.full_name
                reply.all_extension_numbers_response.extension_number.extend(
                    sorted(e.number for e in self._pool.FindAllExtensions(message)))
            else:
                reply.error_response.error_code = Status.INVALID_ARGUMENT.value
                reply.error_response.error_message = "no request kind given"
        except KeyError:
            reply.error_response.error_code = Status.NOT_FOUND.value
            reply.error_response.error_message = f"{kind}: not found"
        return reply

    def _handler(self, package: str) -> Handler:
        async def info(stream: Any) -> None:
            async for request in stream:
                await stream.send_message(self.answer(package, request))

        info.__name__ = "ServerReflectionInfo"
        return Handler(info, Cardinality.STREAM_STREAM,
                       self._protos.message(f"{package}.ServerReflectionRequest"),
                       self._protos.message(f"{package}.ServerReflectionResponse"))

    def __mapping__(self) -> Mapping[str, Handler]:
        return {f"/{package}.ServerReflection/ServerReflectionInfo": self._handler(package)
                for package in REFLECTION_FILES}
