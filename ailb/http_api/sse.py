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
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from ailb.errors import GatewayError, InternalError
from ailb.http_api.errors import error_object
from ailb.http_api.handling import HandOff
from ailb.model import StreamChunk
from ailb.pipeline.chat import Opened
from ailb.pipeline.drain import StreamCut
from ailb.pipeline.frame import Frame
from ailb.pipeline.notes import opening_notes
from ailb.providers.sse_block import events_of, without_spans


class StreamEncoder(Protocol):
    def chunk(self, chunk: StreamChunk) -> bytes:
        """The bytes for one chunk; empty to send nothing for it. A block of events (``raw``
        set) only reaches an encoder whose class says ``relays_blocks = True``; the others get
        its events one by one."""
        ...

    def end(self) -> bytes:
        """The bytes that close a complete stream."""
        ...

    def error(self, exc: GatewayError) -> bytes:
        """The bytes that end a stream that failed after it started."""
        ...


class OpenAIEncoder:
    __slots__ = ("_include_usage",)
    relays_blocks = True  # an OpenAI upstream's events leave as they came

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage

    def chunk(self, chunk: StreamChunk) -> bytes:
        raw = chunk.raw
        if raw is not None:
            if chunk.usage_spans and not self._include_usage:
                return without_spans(raw, chunk.usage_spans)
            return raw
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


class SSEBody:
    __slots__ = ("_blocks", "_closed", "_cut", "_encoder", "_exchange", "_finish", "_first",
                 "_frame", "_returned", "_state", "_stream", "_watch")

    def __init__(self, frame: Frame, opened: Opened, encoder: StreamEncoder,
                 finish: Callable[[], Awaitable[None]] | None = None) -> None:
        self._frame = frame
        self._exchange = frame.exchange
        self._stream = opened.stream
        self._watch = opened.watch
        self._first: StreamChunk | None = opened.stream.first
        self._encoder = encoder
        self._blocks: bool = getattr(encoder, "relays_blocks", False)
        self._state = "open"  # open -> ending (last event sent) -> ended
        self._closed = False
        self._returned = 0.0  # when the last piece went to the server to be sent
        self._cut = StreamCut(frame.services.drain, opened.stream)
        self._finish = finish  # awaited before the closing bytes (the Responses state)

    def __aiter__(self) -> SSEBody:
        return self

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
        held = b""  # a last block's bytes, sent with the stream's end in one write
        try:
            while True:
                chunk = self._first
                if chunk is not None:
                    self._first = None
                else:
                    chunk = await self._cut.next()
                    if chunk is None:
                        if self._watch is not None:
                            await self._watch.done()
                        if self._finish is not None:  # a failure is an error event
                            await self._finish()
                        self._end(200)
                        await self._frame.settle_before_end()
                        return held + self._encoder.end()
                if self._watch is not None:
                    self._watch.seen(chunk)
                if chunk.raw is None or self._blocks:
                    data = self._encoder.chunk(chunk)
                else:  # a door that translates: every event of the block, in one write
                    data = b"".join([self._encoder.chunk(event) for event in events_of(chunk)])
                if chunk.last:
                    held += data
                elif data:
                    return data
        except GatewayError as exc:
            self._end(exc.status, exc)
            return held + self._encoder.error(exc)
        except Exception:  # a bug of ours: end the stream with an error event, and log it
            self._frame.crashed()
            self._state = "ending"
            return held + self._encoder.error(InternalError())

    def _end(self, status: int, exc: GatewayError | None = None) -> None:
        self._state = "ending"
        self._frame.ended(status, exc)

    async def aclose(self) -> None:
        """Release the upstream call and record the request. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._cut.discard()
        try:
            with trio.CancelScope(shield=True):
                await self._stream.aclose()
        finally:
            await self._frame.close()


def stream_response(frame: Frame, opened: Opened, encoder: StreamEncoder,
                    finish: Callable[[], Awaitable[None]] | None = None) -> HandOff:
    """The 200 SSE answer for an opened stream; its body finishes the request, awaiting
    ``finish`` (when given) after the last chunk and before the encoder's closing bytes. The
    caller must close the body however the response ends (it releases the upstream call)."""
    return HandOff(SSEBody(frame, opened, encoder, finish),
                   {**opening_notes(frame.exchange), "cache-control": "no-cache",
                    "content-type": "text/event-stream; charset=utf-8"})
