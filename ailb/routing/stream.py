"""A routed stream: the first chunk (or block of events) already in hand, the rest pulled on
demand."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import trio

from ailb.errors import UpstreamError, UpstreamStreamCut, UpstreamTimeout
from ailb.model import StreamChunk
from ailb.pipeline.exchange import Exchange
from ailb.telemetry.spans import chunk_seen


class OpenStream:
    """A stream whose first chunk has arrived (so the response can start with a 200).

    Take ``first``, then call :meth:`next` until it returns None; whatever happens, call
    :meth:`aclose`, which closes the upstream call and releases the deployment exactly once,
    even if :meth:`next` was never called. ``bind`` attaches the request's exchange once the
    stream has won its place (hedged attempts race before one is chosen).
    """

    __slots__ = ("_aborted", "_closed", "_exchange", "_on_error", "_on_release", "_upstream",
                 "first")

    def __init__(self, first: StreamChunk, upstream: AsyncIterator[StreamChunk],
                 on_error: Callable[[UpstreamError], None],
                 on_release: Callable[[], None]) -> None:
        self.first = first
        self._upstream = upstream
        self._exchange: Exchange | None = None
        self._on_error = on_error
        self._on_release = on_release
        self._closed = False
        self._aborted = False

    @property
    def abortable(self) -> bool:
        """True when :meth:`abort` can end a wait on the upstream (no cancel scope needed)."""
        return bool(getattr(self._upstream, "abortable", False))

    def abort(self) -> bool:
        """End the upstream call now, from outside: a wait on it fails at once. False when
        the upstream cannot be ended this way (a cancel scope must do it)."""
        abort = getattr(self._upstream, "abort", None)
        if abort is None or not abort():
            return False
        self._aborted = True  # the error that follows is ours, not the deployment's
        return True

    def bind(self, exchange: Exchange) -> None:
        self._exchange = exchange
        # chunks relayed after the first: a block's events count one by one
        exchange.chunks += max(0, self.first.events - 1)
        if self.first.usage is not None:
            exchange.usage = self.first.usage
        if exchange.trace is not None:
            chunk_seen(exchange.trace, self.first)

    async def next(self) -> StreamChunk | None:
        """The next chunk, or None once the upstream finished cleanly. Raises UpstreamError."""
        start = time.perf_counter()
        try:
            chunk = await anext(self._upstream)
        except StopAsyncIteration:
            return None
        except UpstreamError as exc:
            if not self._aborted:
                self._on_error(exc)
            raise
        finally:
            if self._exchange is not None:
                self._exchange.upstream_s += time.perf_counter() - start
        if self._exchange is not None:
            self._exchange.chunks += chunk.events
            if chunk.usage is not None:
                self._exchange.usage = chunk.usage
            if self._exchange.trace is not None:
                chunk_seen(self._exchange.trace, chunk)
        return chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await aclose_quietly(self._upstream)
        finally:
            self._on_release()


async def first_chunk(upstream: AsyncIterator[StreamChunk], deployment: str,
                      timeout_s: float) -> StreamChunk:
    """Wait for a stream's first chunk. Raises UpstreamTimeout, UpstreamStreamCut or the
    provider's error; the caller closes ``upstream`` on failure."""
    try:
        with trio.fail_after(timeout_s):
            return await anext(upstream)
    except trio.TooSlowError:
        raise UpstreamTimeout(f"upstream {deployment} sent no first token in time") from None
    except StopAsyncIteration:
        raise UpstreamStreamCut(f"upstream {deployment} ended the stream without a chunk") \
            from None


async def aclose_quietly(iterator: AsyncIterator[StreamChunk]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            await aclose()
