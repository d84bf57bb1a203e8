"""Graceful drain: count requests in flight, refuse new ones while stopping, and end the streams
still running at the deadline with an error event instead of cutting them mid-way.

Order on shutdown (driven by the supervisor): ``mark_unready()`` -> ``/readyz`` says 503 while
requests are still served, for ``SERVER.unready_delay_s`` -> ``begin()`` -> the listener closes,
requests on open connections get 503 -> wait for
``wait_idle()`` up to the grace period -> ``cut_streams()`` -> each open stream sends an error event
and ends -> the servers are cancelled.
"""

from __future__ import annotations

from typing import Protocol

import trio

from ailb.errors import ShuttingDown
from ailb.model import StreamChunk


class Cuttable(Protocol):
    def cut(self) -> None:
        """Stop waiting on upstream now and end with an error event."""
        ...


class Drain:
    def __init__(self) -> None:
        self._count = 0
        self._idle = trio.Event()
        self._idle.set()
        self._streams: set[Cuttable] = set()
        self.unready = False  # /readyz answers 503; requests are still served
        self.draining = False  # the listener is closed; new requests get 503
        self.streams_cut = False

    @property
    def in_flight(self) -> int:
        return self._count

    def enter(self) -> None:
        if self._count == 0:
            self._idle = trio.Event()
        self._count += 1

    def leave(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        while self._count:
            await self._idle.wait()

    def mark_unready(self) -> None:
        self.unready = True

    def begin(self) -> None:
        self.unready = True
        self.draining = True

    def add_stream(self, stream: Cuttable) -> None:
        self._streams.add(stream)

    def discard_stream(self, stream: Cuttable) -> None:
        self._streams.discard(stream)

    def cut_streams(self) -> None:
        """The grace period is over: every open stream ends now (see ``Cuttable.cut``)."""
        self.streams_cut = True
        for stream in list(self._streams):
            stream.cut()


class ChunkSource(Protocol):
    async def next(self) -> StreamChunk | None: ...

    @property
    def abortable(self) -> bool:
        """True when :meth:`abort` can end a wait on the upstream."""
        ...

    def abort(self) -> bool:
        """End the upstream call now (a wait on it fails); False when it cannot."""
        ...


class StreamCut:
    """A relayed stream's place in the drain, for every door: once the grace period is over,
    its wait on the upstream ends and :meth:`next` raises ShuttingDown, so the door ends the
    stream with an error (an event, or the gRPC status) rather than cutting it.

    One cut per stream, not a cancel scope per event: a source that can be aborted (an
    upstream HTTP response on AILB's own transport) is closed at once by :meth:`cut`, which
    makes its pending read fail; only a source that cannot (a replayed answer, the echo
    provider, a response on ``UPSTREAM__TRANSPORT=httpx``) gets a cancel scope around each
    wait, which the cut cancels.
    """

    __slots__ = ("_cut", "_drain", "_scope", "_source")

    def __init__(self, drain: Drain, source: ChunkSource) -> None:
        self._drain = drain
        self._source = source
        self._scope: trio.CancelScope | None = None  # around the current wait, if any
        self._cut = False
        drain.add_stream(self)

    def cut(self) -> None:
        self._cut = True
        if self._source.abort():
            return
        if self._scope is not None:
            self._scope.cancel()

    def discard(self) -> None:
        """The stream ended: the drain forgets it."""
        self._drain.discard_stream(self)

    async def next(self) -> StreamChunk | None:
        """The source's next chunk. Raises ShuttingDown once streams are cut."""
        if self._cut or self._drain.streams_cut:
            raise ShuttingDown("AILB is shutting down; the stream was ended.")
        source = self._source
        if source.abortable:
            try:
                return await source.next()
            except Exception:
                if self._cut:  # the failure is the closed upstream call's
                    raise ShuttingDown("AILB is shutting down; the stream was ended.") \
                        from None
                raise
        with trio.CancelScope() as scope:
            self._scope = scope
            chunk = await source.next()
        self._scope = None
        if scope.cancelled_caught:
            raise ShuttingDown("AILB is shutting down; the stream was ended.")
        return chunk
