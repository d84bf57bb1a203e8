"""The body of a streamed answer: SSE framing over the router's chunks.

An async iterator class rather than a generator, so that ``aclose`` releases everything (the
upstream call, the in-flight count, the access-log line) even when the body was never iterated.
The wire format is the encoder's: OpenAI's ``data:`` chunks here, Anthropic's named events in
:mod:`ailb.http_api.anthropic_sse`. Per-chunk work is kept to one ``bytes`` join for OpenAI: the
chunk's JSON text is relayed as it came.

How a stream ends:

* cleanly: the upstream finished; OpenAI's encoder sends ``data: [DONE]``;
* with an error after it started (upstream cut, timeout, upstream error event, shutdown
  deadline): one error event and no clean end, so no client mistakes it for a complete answer;
* the client went away: the upstream call is cancelled at once (status 499 in the log).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Protocol, cast

import trio
from quart import Response, request

from ailb.admission import release
from ailb.errors import GatewayError, ShuttingDown, UpstreamError
from ailb.exchange import Exchange
from ailb.http_api.connection import attach_body
from ailb.http_api.errors import error_object
from ailb.http_api.handling import HandOff, InternalError
from ailb.http_api.observe import ailb_headers
from ailb.model import StreamChunk
from ailb.routing.stream import OpenStream
from ailb.services import Services

_log = logging.getLogger("ailb.http")


class StreamEncoder(Protocol):
    def chunk(self, chunk: StreamChunk) -> bytes:
        """The bytes for one chunk; empty to send nothing for it."""
        ...

    def end(self) -> bytes:
        """The bytes that close a complete stream."""
        ...

    def error(self, exc: GatewayError) -> bytes:
        """The bytes that end a stream that failed after it started."""
        ...


class OpenAIEncoder:
    __slots__ = ("_include_usage",)

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage

    def chunk(self, chunk: StreamChunk) -> bytes:
        if chunk.usage_only and not self._include_usage:
            return b""  # AILB asked upstream for usage; the client did not
        data = chunk.data
        if "\n" in data:  # an event whose data spanned several lines: each needs its prefix
            data = data.replace("\n", "\ndata: ")
        return b"data: " + data.encode() + b"\n\n"

    def end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, exc: GatewayError) -> bytes:
        return b"data: " + json.dumps(error_object(exc), separators=(",", ":")).encode() \
            + b"\n\n"


class StreamObserver(Protocol):
    """Sees every chunk of a stream; told once the stream ended cleanly (memory uses it)."""

    def seen(self, chunk: StreamChunk) -> None: ...

    async def done(self) -> None: ...


class SSEBody:
    __slots__ = ("_closed", "_drain", "_encoder", "_exchange", "_first", "_key_id", "_observer",
                 "_returned", "_scope", "_services", "_state", "_status", "_stream")

    def __init__(self, services: Services, exchange: Exchange, stream: OpenStream,
                 key_id: str, encoder: StreamEncoder,
                 observer: StreamObserver | None = None) -> None:
        self._services = services
        self._drain = services.drain
        self._exchange = exchange
        self._stream = stream
        self._first: StreamChunk | None = stream.first
        self._encoder = encoder
        self._observer = observer
        self._key_id = key_id
        self._state = "open"  # open -> ending (last event sent) -> ended
        self._status = 499  # until the stream ends on its own, the client is the one who left
        self._closed = False
        self._returned = 0.0  # when the last piece went to the server to be sent
        self._scope: trio.CancelScope | None = None  # around the current upstream wait
        self._drain.add_stream(self)

    def __aiter__(self) -> SSEBody:
        return self

    def cut(self) -> None:
        """The grace period is over: stop waiting on upstream, end with an error event."""
        if self._scope is not None:
            self._scope.cancel()

    async def __anext__(self) -> bytes:
        now = time.perf_counter()
        if self._returned:
            self._exchange.client_s += now - self._returned  # the client took its time
        if self._state != "open":
            await self.aclose()
            raise StopAsyncIteration
        data = await self._next_piece()
        self._returned = time.perf_counter()
        return data

    async def _next_piece(self) -> bytes:
        try:
            while True:
                chunk = self._first
                if chunk is not None:
                    self._first = None
                else:
                    if self._drain.streams_cut:
                        raise ShuttingDown("AILB is shutting down; the stream was ended.")
                    scope = self._scope = trio.CancelScope()
                    with scope:
                        chunk = await self._stream.next()
                    self._scope = None
                    if scope.cancelled_caught:
                        raise ShuttingDown("AILB is shutting down; the stream was ended.")
                    if chunk is None:
                        if self._observer is not None:
                            await self._observer.done()
                        self._end(200)
                        return self._encoder.end()
                if self._observer is not None:
                    self._observer.seen(chunk)
                data = self._encoder.chunk(chunk)
                if data:
                    return data
        except GatewayError as exc:
            self._exchange.error_kind = exc.kind if isinstance(exc, UpstreamError) else exc.type
            self._end(exc.status)
            return self._encoder.error(exc)
        except Exception:  # a bug of ours: end the stream with an error event, and log it
            _log.exception("unhandled error in a stream", extra={"fields": {
                "request_id": self._exchange.request_id}})
            self._exchange.error_kind = "internal"
            self._end(500)
            return self._encoder.error(InternalError())

    def _end(self, status: int) -> None:
        self._state = "ending"
        self._status = status

    async def aclose(self) -> None:
        """Release the upstream call and record the request. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._drain.discard_stream(self)
        try:
            with trio.CancelScope(shield=True):
                await self._stream.aclose()
        finally:
            with trio.CancelScope(shield=True):
                await release(self._services, self._exchange, self._status, self._key_id)


def stream_response(services: Services, exchange: Exchange, stream: OpenStream, key_id: str,
                    encoder: StreamEncoder, observer: StreamObserver | None = None) -> HandOff:
    """The 200 SSE response for an opened stream; its body finishes the request."""
    body = SSEBody(services, exchange, stream, key_id, encoder, observer)
    attach_body(cast(Any, request)._get_current_object(), body)  # the proxied object
    response = Response(body, status=200, content_type="text/event-stream; charset=utf-8",
                        headers={**ailb_headers(exchange), "cache-control": "no-cache",
                                 **(exchange.ticket.headers if exchange.ticket else {})})
    response.timeout = None  # Quart would cut streams after RESPONSE_TIMEOUT
    return HandOff(response)
