"""Plain RESP2 connections to a Redis/Valkey server for the hot path's scripts (a take and a
release per request): :class:`Lane`, used by :mod:`ailb.shared.redis` (see its docstring for
why: coredis spends about 0.15 ms of CPU per command, a Trio socket round trip 0.02 ms).
Part of the Redis edge: the lane takes the server, credentials, database and TLS context that
coredis parsed from the URL, and raises OSError, ReplyError, Dropped or Trio's own errors,
which the edge translates.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import coredis
import trio

LANE_CONNECTIONS = 64  # at most, per client; more callers wait (within timeout_s)


class ReplyError(Exception):
    """An error reply of the server (``-ERR ...``) to a lane command."""


class Dropped(Exception):
    """The server closed a lane connection."""


BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, Dropped)

Arg = str | int | float | bytes


def encode(args: Sequence[Arg]) -> bytes:
    """One RESP command (an array of bulk strings), encoded as coredis would."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("a bool is no Redis argument")
        elif isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = b"%.15g" % arg
        else:
            data = bytes(arg)
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class Incomplete(Exception):
    pass


INCOMPLETE = Incomplete()


def parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 reply at ``pos``: (value, the position after it). Bulk strings are bytes,
    nil is None, an error reply is a ReplyError (returned, not raised). Raises Incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise INCOMPLETE
    kind, line, pos = buf[pos], buf[pos + 1:end], end + 2
    if kind == 36:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise INCOMPLETE
        return buf[pos:pos + size], pos + size + 2
    if kind == 42:  # * array
        size = int(line)
        if size < 0:
            return None, pos
        items = []
        for _ in range(size):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(line), pos
    if kind == 43:  # + simple string
        return line, pos
    if kind == 45:  # - error
        return ReplyError(line.decode(errors="replace")), pos
    raise ReplyError(f"unexpected reply type {chr(kind)!r}")


class Wire:
    """One lane connection: a command, then its whole reply."""

    __slots__ = ("_buf", "_stream", "received")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buf = b""
        self.received = False  # any byte of the reply to the last command (else: resendable)

    async def call(self, command: bytes) -> Any:
        """The reply to ``command`` (encoded). Raises ReplyError for an error reply."""
        self.received = False  # of this command's reply
        await self._stream.send_all(command)
        while True:
            if self._buf:
                try:
                    reply, pos = parse(self._buf, 0)
                except Incomplete:
                    pass
                else:
                    self._buf = self._buf[pos:]
                    if isinstance(reply, ReplyError):
                        raise reply
                    return reply
            data = await self._stream.receive_some(65536)
            if not data:
                raise Dropped("the server closed the connection")
            self.received = True
            self._buf += data

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


class Lane:
    """Plain connections for scripts (see the module docstring): idle ones are reused, one
    that failed or was interrupted is closed, at most LANE_CONNECTIONS at once."""

    def __init__(self, host: str | None, port: int, path: str | None,
                 ssl_context: ssl.SSLContext | None, hello: list[bytes],
                 connect_timeout_s: float) -> None:
        self._host, self._port, self._path = host, port, path
        self._ssl = ssl_context
        self._hello = hello  # AUTH / SELECT, each encoded
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[Wire] = []
        self._limit = trio.CapacityLimiter(LANE_CONNECTIONS)

    @classmethod
    def of(cls, client: coredis.Redis[bytes], timeout_s: float) -> Lane | None:
        """The lane to ``client``'s server, with its credentials and database; None for a
        connection kind this module does not make (scripts then go through coredis)."""
        pool = client.connection_pool
        options: dict[str, Any] = dict(pool.connection_kwargs)
        location = getattr(pool, "location", None)
        host, port = getattr(location, "host", None), getattr(location, "port", None)
        path = getattr(location, "path", None)
        context = options.get("ssl_context")
        if set(options) - {"db", "decode_responses", "noreply", "noevict", "notouch",
                           "username", "password", "ssl_context", "processing_budget",
                           "connect_timeout", "stream_timeout"}:
            return None  # an option the lane would ignore
        if options.get("noreply") or options.get("noevict") or options.get("notouch"):
            return None
        if not (isinstance(path, str) and context is None) and not (
                isinstance(host, str) and isinstance(port, int)):
            return None
        hello: list[bytes] = []
        password, username = options.get("password"), options.get("username")
        if password is not None:
            hello.append(encode(["AUTH", username, password] if username else
                                 ["AUTH", password]))
        if options.get("db"):
            hello.append(encode(["SELECT", int(options["db"])]))
        return cls(host if path is None else None, port or 0, path, context, hello,
                   timeout_s / 2)

    async def _dial(self) -> Wire:
        with trio.fail_after(self._connect_timeout_s):
            stream: trio.abc.Stream
            if self._path is not None:
                stream = await trio.open_unix_socket(self._path)
            else:
                assert self._host is not None
                stream = await trio.open_tcp_stream(self._host, self._port)
                if self._ssl is not None:
                    tls = trio.SSLStream(stream, self._ssl, server_hostname=self._host)
                    try:
                        await tls.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(stream)
                        raise
                    stream = tls
            wire = Wire(stream)
            try:
                for command in self._hello:
                    await wire.call(command)
            except BaseException:
                await wire.aclose()
                raise
            return wire

    async def call(self, command: bytes) -> Any:
        """The reply to ``command``, on an idle connection or a new one."""
        async with self._limit:
            reused = bool(self._idle)
            wire = self._idle.pop() if reused else await self._dial()
            try:
                reply = await wire.call(command)
            except BROKEN:
                await wire.aclose()
                if not reused or wire.received:
                    raise
                self.drop()  # the server went away: the other idle ones are dead too
                wire = await self._dial()
                try:
                    reply = await wire.call(command)
                except BaseException:
                    await wire.aclose()
                    raise
            except ReplyError:
                self._idle.append(wire)  # a whole reply was read: the connection is fine
                raise
            except BaseException:  # interrupted mid-reply: the connection is unusable
                await wire.aclose()
                raise
            self._idle.append(wire)
            return reply

    def drop(self) -> None:
        """Close the idle connections (their sockets; nothing is sent)."""
        idle, self._idle = self._idle, []
        for wire in idle:
            stream = wire._stream
            if isinstance(stream, trio.SSLStream):
                stream = stream.transport_stream
            if isinstance(stream, trio.SocketStream):
                stream.socket.close()


