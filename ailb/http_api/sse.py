"""The body of a streamed chat completion: OpenAI's SSE framing over the router's chunks.

An async iterator class rather than a generator, so that ``aclose`` releases everything (the
upstream call, the in-flight count, the access-log line) even when the body was never iterated.
Per-chunk work is kept to one ``bytes`` join: the chunk's JSON text is relayed as it came.

How a stream ends:

* cleanly: the upstream finished, ``data: [DONE]`` is sent;
* with an error after it started (upstream cut, timeout, upstream error event, shutdown
  deadline): one ``data: {"error": {...}}`` event and no ``[DONE]``, so no client mistakes it for
  a complete answer;
* the client went away: the upstream call is cancelled at once (status 499 in the log).
"""

from __future__ import annotations

import trio

from ailb.errors import GatewayError, UpstreamError
from ailb.exchange import Exchange
from ailb.http_api.errors import sse_error_event
from ailb.http_api.handling import ShuttingDown, release
from ailb.model import ChatRequest, StreamChunk
from ailb.routing.router import OpenStream
from ailb.services import Services

DONE = b"data: [DONE]\n\n"


class SSEBody:
    __slots__ = ("_closed", "_drain", "_exchange", "_first", "_include_usage", "_key_id",
                 "_services", "_state", "_status", "_stream")

    def __init__(self, services: Services, chat: ChatRequest, exchange: Exchange,
                 stream: OpenStream, key_id: str) -> None:
        self._services = services
        self._drain = services.drain
        self._exchange = exchange
        self._stream = stream
        self._first: StreamChunk | None = stream.first
        self._include_usage = chat.include_usage
        self._key_id = key_id
        self._state = "open"  # open -> ending (last event sent) -> ended
        self._status = 499  # until the stream ends on its own, the client is the one who left
        self._closed = False

    def __aiter__(self) -> SSEBody:
        return self

    async def __anext__(self) -> bytes:
        if self._state != "open":
            await self.aclose()
            raise StopAsyncIteration
        try:
            while True:
                chunk = self._first
                if chunk is not None:
                    self._first = None
                else:
                    if self._drain.streams_cut:
                        raise ShuttingDown("AILB is shutting down; the stream was ended.")
                    with self._drain.cuttable() as scope:
                        try:
                            chunk = await anext(self._stream.rest)
                        except StopAsyncIteration:
                            self._end(200)
                            return DONE
                    if scope.cancelled_caught or chunk is None:
                        raise ShuttingDown("AILB is shutting down; the stream was ended.")
                if chunk.usage_only and not self._include_usage:
                    continue
                return b"data: " + chunk.data.encode() + b"\n\n"
        except GatewayError as exc:
            self._exchange.error_kind = exc.kind if isinstance(exc, UpstreamError) else exc.type
            self._end(exc.status)
            return sse_error_event(exc)

    def _end(self, status: int) -> None:
        self._state = "ending"
        self._status = status

    async def aclose(self) -> None:
        """Release the upstream call and record the request. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            with trio.CancelScope(shield=True):
                await self._stream.aclose()
        finally:
            release(self._services, self._exchange, self._status, self._key_id)
