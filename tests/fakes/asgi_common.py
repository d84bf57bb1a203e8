"""Shared machinery for the Anthropic and Ollama fakes: a raw ASGI base app served by Hypercorn.

Same design as ``openai_upstream.py`` (which keeps its own copy): every request is parsed and
recorded, a watcher task counts client disconnects that arrive before the response is complete
and cancels the handler, and ``wait_*`` helpers let tests wait for those observations.
Subclasses implement :meth:`FakeServer._dispatch`.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_SERVER_LOG = logging.getLogger("tests.fakes.hypercorn")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (``body`` is the parsed JSON, or None)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


class Response:
    """Wraps ASGI ``send``; adds the request-id header and remembers whether the body ended."""

    def __init__(self, send: Send, request_id: str, id_header: str | None) -> None:
        self._send = send
        self.request_id = request_id
        self._id_header = id_header
        self.finished = False

    async def start(self, status: int, headers: dict[str, str]) -> None:
        id_headers = {self._id_header: self.request_id} if self._id_header else {}
        all_headers = {**headers, **id_headers}
        raw = [(k.encode(), v.encode()) for k, v in all_headers.items()]
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def body(self, data: bytes, *, more: bool) -> None:
        self.finished = not more  # set before sending: hypercorn reports a disconnect on close
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def send_bytes(self, status: int, data: bytes, content_type: str, **headers: str) -> None:
        """A complete response with a fixed body."""
        all_headers = {"content-type": content_type, "content-length": str(len(data)), **headers}
        await self.start(status, all_headers)
        await self.body(data, more=False)

    async def json(
        self,
        status: int,
        obj: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        """A complete compact-JSON response."""
        data = json.dumps(obj, separators=(",", ":")).encode()
        await self.send_bytes(status, data, content_type, **(headers or {}))


class Observed:
    """What every fake records about its clients, and helpers that wait for it.

    ``requests`` (every request, in arrival order), ``raw_bodies`` (each complete request
    body's bytes exactly as received, in the same order), ``disconnects`` (clients that went
    away before their response was complete), ``in_flight`` (requests being handled);
    ``shutdown.set()`` stops a server started with :func:`serve` gracefully.
    """

    requests: list[Any]

    def __init__(self) -> None:
        self.requests = []
        self.raw_bodies: list[bytes] = []
        self.disconnects = 0
        self.in_flight = 0
        self.shutdown = trio.Event()
        self._changed = trio.Event()
        self._ids = itertools.count(1)
        self.client_ports: set[int] = set()  # the connections requests came on

    # --- waiting helpers -----------------------------------------------------------------
    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_disconnect(self, count: int = 1) -> None:
        """Return once ``disconnects >= count`` (wrap in ``trio.fail_after``)."""
        await self._wait_until(lambda: self.disconnects >= count)

    async def wait_requests(self, count: int = 1) -> None:
        """Return once at least ``count`` requests have been received."""
        await self._wait_until(lambda: len(self.requests) >= count)

    async def wait_idle(self) -> None:
        """Return once no request is being handled."""
        await self._wait_until(lambda: self.in_flight == 0)

    def _note_disconnect(self) -> None:
        self.disconnects += 1
        self._notify()

    # --- ASGI ----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            client = scope.get("client")
            if client:
                self.client_ports.add(client[1])  # one per TCP connection
            self.in_flight += 1
            try:
                await self._handle(scope, receive, send)
            finally:
                self.in_flight -= 1
                self._notify()

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    async def _read_request(self, scope: Scope, receive: Receive
                            ) -> tuple[Any, dict[str, str]] | None:
        """The request's JSON body (None when empty or not JSON) and lowercase headers; None
        (counted as a disconnect) when the client left before sending all of it."""
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._note_disconnect()
                return None
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.raw_bodies.append(body)
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return parsed, headers

class FakeServer(Observed):
    """Base ASGI app: request recording, disconnect accounting and waiting helpers.

    Observations: ``requests`` (every request, in arrival order), ``disconnects`` (clients that
    went away before their response was complete), ``in_flight`` (requests being handled).
    ``shutdown.set()`` stops a server started with :func:`serve` gracefully.
    """

    request_id_header: str | None = "x-request-id"  # None: responses carry no request id
    request_id_prefix = "req_fake"

    def next_id(self, prefix: str) -> str:
        """A fresh deterministic identifier such as ``msg_fake000003``."""
        return f"{prefix}{next(self._ids):06d}"

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = await self._read_request(scope, receive)
        if received is None:
            return
        parsed, headers = received
        query = scope.get("query_string", b"").decode("latin-1")
        request = RecordedRequest(scope["method"], scope["path"], query, headers, parsed)
        self.requests.append(request)
        self._notify()
        response = Response(send, self.next_id(self.request_id_prefix), self.request_id_header)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_disconnect, receive, response, nursery.cancel_scope)
            await self._dispatch(request, response)
            nursery.cancel_scope.cancel()

    async def _watch_disconnect(
        self, receive: Receive, response: Response, scope: trio.CancelScope
    ) -> None:
        """Count a client disconnect that arrives before the response is complete; stop work."""
        while (await receive())["type"] != "http.disconnect":
            pass
        if not response.finished:
            self._note_disconnect()
            scope.cancel()

    async def _dispatch(self, request: RecordedRequest, response: Response) -> None:
        raise NotImplementedError


async def stream_frames(
    response: Response,
    frames: list[bytes],
    *,
    content_type: str,
    first_delay_s: float,
    delay_s: float,
    cut_after: int | None,
) -> None:
    """Send a 200 streaming response made of ``frames`` (SSE events or NDJSON lines).

    Sleeps ``first_delay_s`` after the headers and ``delay_s`` between frames. With
    ``cut_after`` at most that many frames are sent and the chunked body is never terminated:
    hypercorn then closes the connection, so the client sees a truncated stream.
    """
    await response.start(200, {"content-type": content_type, "cache-control": "no-cache"})
    await trio.sleep(first_delay_s)
    for index, frame in enumerate(frames):
        if cut_after is not None and index >= cut_after:
            return
        if index:
            await trio.sleep(delay_s)
        await response.body(frame, more=True)
    if cut_after is None:
        await response.body(b"", more=False)


async def serve(nursery: trio.Nursery, app: FakeServer, *, port: int = 0) -> str:
    """Serve ``app`` on 127.0.0.1 as a child of ``nursery``; return ``http://127.0.0.1:PORT``.

    The server runs until ``nursery`` is cancelled or ``app.shutdown.set()`` is called
    (graceful stop: the port closes, in-flight requests get ``graceful_timeout``).
    Pass the previous ``port`` to bring a stopped upstream back on the same address.
    """
    app.shutdown = trio.Event()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = _SERVER_LOG  # INFO is below the default WARNING level: quiet
    config.graceful_timeout = 0.5
    config.include_server_header = False
    asgi: Any = app  # hypercorn's Framework type is a union of callables; ours is an object
    run = partial(hypercorn.trio.serve, asgi, config, shutdown_trigger=app.shutdown.wait)
    binds: list[str] = await nursery.start(run)
    return binds[0]
