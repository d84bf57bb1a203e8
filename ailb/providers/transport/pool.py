"""The keep-alive pool of one transport (one deployment): idle connections per (scheme, host,
port), and a limit on requests in flight that is also the limit on open connections.

A request takes a permit (waiting at most the pool timeout, in arrival order), then an idle
connection of its origin if one is fit, else opens a new one. Handing out an idle connection
checks that connection only: one idle too long is closed on the clock alone, without a
syscall; the one handed out gets one non-blocking peek (``Connection.alive``). Nothing ever
polls the whole pool. Each request gives its permit back exactly once, with
:meth:`Pool.check_in` (the connection goes back, idle) or :meth:`Pool.discard` (it is closed).
"""

from __future__ import annotations

import httpx
import trio

from ailb.providers.transport.connection import Connection, Key

KEEPALIVE_S = 5.0  # like httpx's default keepalive_expiry; upstreams commonly close at 5-75 s


class Pool:
    def __init__(self, max_connections: int, keepalive_s: float = KEEPALIVE_S) -> None:
        self._permits = trio.Semaphore(max_connections)
        self._max = max_connections
        self._keepalive_s = keepalive_s
        self._idle: dict[Key, list[Connection]] = {}  # oldest first
        self._open: set[Connection] = set()
        self._connecting = 0  # connections being opened (each counts against the limit)
        self._closed = False
        self.peeks = 0  # liveness checks made (tests read it)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def acquire(self, seconds: float | None, request: httpx.Request) -> None:
        """Take a permit for one request. Raises httpx.PoolTimeout."""
        try:
            self._permits.acquire_nowait()
            return
        except trio.WouldBlock:
            pass
        if seconds is None:
            await self._permits.acquire()
            return
        with trio.move_on_after(seconds):
            await self._permits.acquire()
            return
        raise httpx.PoolTimeout("no upstream connection free in time", request=request)

    def release(self) -> None:
        """Give back the permit of a request that holds no connection."""
        self._permits.release()

    def take_idle(self, key: Key) -> Connection | None:
        """The newest idle connection of ``key`` that is fit, or None (open a new one)."""
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_fit = trio.current_time() - self._keepalive_s
        while idle and idle[0].idle_since < oldest_fit:  # expired: the clock says so
            self._close(idle.pop(0))
        while idle:
            conn = idle.pop()
            self.peeks += 1
            if conn.alive():
                return conn
            self._close(conn)
        return None

    def make_room(self) -> None:
        """Before opening a connection (which counts from here: :meth:`opened` or
        :meth:`not_opened` must follow): at the limit, close the oldest idle one (of another
        origin: one of this origin would have been taken). A permit is held and has no
        connection, so at the limit at least one is idle."""
        self._connecting += 1
        if len(self._open) + self._connecting <= self._max:
            return
        oldest: Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is not None:
            self._idle[oldest.key].remove(oldest)
            self._close(oldest)

    def not_opened(self) -> None:
        self._connecting -= 1

    def opened(self, conn: Connection) -> bool:
        """Count a new connection in; False (and it is closed) if the pool was closed."""
        self._connecting -= 1
        if self._closed:
            conn.close()
            return False
        self._open.add(conn)
        return True

    def forget(self, conn: Connection) -> None:
        """Close a connection that failed, keeping the request's permit (it may try again)."""
        self._close(conn)

    def check_in(self, conn: Connection) -> None:
        """The response was read whole and the connection may carry another: idle it."""
        if self._closed or conn not in self._open:
            conn.close()
        else:
            conn.idle_since = trio.current_time()
            self._idle.setdefault(conn.key, []).append(conn)
        self._permits.release()

    def discard(self, conn: Connection) -> None:
        """Close the connection of an unfinished or failed response and free its permit."""
        self._close(conn)
        self._permits.release()

    def close(self) -> None:
        """Close every connection, idle or in use (a read in progress fails with ReadError)."""
        self._closed = True
        for conn in self._open:
            conn.close()
        self._open.clear()
        self._idle.clear()

    def _close(self, conn: Connection) -> None:
        conn.close()
        self._open.discard(conn)
