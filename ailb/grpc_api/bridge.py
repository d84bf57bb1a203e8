"""The grpclib edge: the gRPC server on ``GRPC_PORT``, a child of the same Trio nursery as the
HTTP server.

grpclib is asyncio-only, so its server runs on a trio-asyncio loop opened inside this task
(STACK-NOTES: the simplest of the two ways that work); handlers reach AILB's Trio code through
``trio_as_aio``. The loop, and with it every gRPC call still running, ends with this task.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from typing import Any

import trio

from ailb import logs
from ailb.config.schema import GrpcSettings
from ailb.errors import ConfigError
from ailb.grpc_api.control import Control
from ailb.grpc_api.gateway_service import GatewayService
from ailb.grpc_api.health import GrpcHealth
from ailb.grpc_api.metadata import Guarded
from ailb.grpc_api.module_service import ModuleService
from ailb.grpc_api.reflection import Reflection
from ailb.pipeline.services import Services

_log = logging.getLogger("ailb.grpc")
CLOSE_WAIT_S = 2.0


def tls_context(settings: GrpcSettings) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plaintext. Raises ConfigError for unreadable
    files."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.client_ca:
            context.load_verify_locations(settings.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("GRPC.tls_cert", f"cannot be loaded: {exc}") from exc
    context.set_alpn_protocols(["h2"])
    return context


def _track_connections(server: Any) -> set[Any]:
    """The transports of the connections ``server`` accepts (grpclib keeps no list of them)."""
    transports: set[Any] = set()
    make_protocol = server._protocol_factory

    def factory() -> Any:
        protocol = make_protocol()
        made = protocol.connection_made

        def connection_made(transport: Any) -> None:
            transports.add(transport)
            made(transport)

        protocol.connection_made = connection_made
        return protocol

    server._protocol_factory = factory
    return transports


async def serve_grpc(services: Services, control: Control, host: str, port: int,
                     tls: ssl.SSLContext | None = None, *, sock: socket.socket | None = None,
                     health: GrpcHealth | None = None,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled. Reports the bound port (useful with port 0). ``sock``: a
    listening socket to serve on instead of binding ``host:port`` (a worker's, from its
    parent). ``health``: the standard health service to run (the supervisor's, which it tells
    of shutdown), else one of its own.

    Besides AILB's services the port runs ``grpc.health.v1.Health`` and server reflection
    (v1 and v1alpha) over all of them: no key needed for those."""
    import trio_asyncio
    from grpclib.server import Server

    async with trio_asyncio.open_loop():
        # every handler behind the one error door: GatewayError -> its status, bugs -> INTERNAL
        health = health or GrpcHealth(services)
        servicers: list[Any] = [Guarded(ModuleService(services, control, time.time(),
                                                      tls_enabled=tls is not None)),
                                Guarded(GatewayService(services)), Guarded(health)]
        reflection = Reflection.over(servicers, health.protos)
        health.register(reflection.names)  # every service served, reflection's too
        server = Server([*servicers, Guarded(reflection)])
        transports = _track_connections(server)
        if sock is not None:
            await trio_asyncio.aio_as_trio(server.start)(sock=sock, ssl=tls)
        else:
            await trio_asyncio.aio_as_trio(server.start)(host, port, ssl=tls)
        # grpclib keeps its asyncio server private; the bound port is only there
        sockets = getattr(server._server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        logs.event(_log, "gRPC is serving", port=bound, tls=tls is not None)
        task_status.started(bound)
        try:
            await trio.sleep_forever()
        finally:
            server.close()
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + CLOSE_WAIT_S
                await trio_asyncio.aio_as_trio(server.wait_closed)()
            # grpclib closes the listener and cancels handlers, not the accepted connections
            for transport in transports:
                transport.close()
