"""Graceful drain: count requests in flight, refuse new ones while stopping, and end the streams
still running at the deadline with an error event instead of cutting them mid-way.

Order on shutdown (driven by the supervisor): ``begin()`` -> new requests get 503 -> wait for
``wait_idle()`` up to the grace period -> ``cut_streams()`` -> each open stream sends an error event
and ends -> the servers are cancelled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


class Drain:
    def __init__(self) -> None:
        self._count = 0
        self._idle = trio.Event()
        self._idle.set()
        self._scopes: set[trio.CancelScope] = set()
        self.draining = False
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

    def begin(self) -> None:
        self.draining = True

    @contextmanager
    def cuttable(self) -> Iterator[trio.CancelScope]:
        """A cancel scope around one upstream wait of a stream, cancelled by ``cut_streams``.

        Never hold it across a ``yield``: wrap single awaits only.
        """
        scope = trio.CancelScope()
        if self.streams_cut:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def cut_streams(self) -> None:
        """The grace period is over: every stream still waiting on upstream ends now."""
        self.streams_cut = True
        for scope in list(self._scopes):
            scope.cancel()
