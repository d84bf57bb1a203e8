"""The Redis/Valkey edge: the only module that imports coredis (and its anyio).

coredis 6 is built on anyio, so it runs under Trio as it is: the client is an async context
manager whose connection tasks live in an anyio task group, i.e. a Trio nursery opened by
:func:`connect` in the caller's task (it must be closed by the same task: use it as ``async
with``). Its pool drops a connection that broke and dials a new one on the next command, so
after a server restart the client comes back by itself; the first command on a connection the
restart killed fails with ``ConnectionError``, which is retried once here (a command that
never reached a server). Nothing else is retried: a timed-out script may have run, and
running it twice would take twice.

Scripts (the hot path: a take and a release per request) go another way: coredis spends about
0.15 ms of CPU per command on its writer and reader tasks, anyio streams and wrappers, against
0.02 ms for a round trip on a Trio socket. They are sent by :class:`_Lane`, a small pool of
plain RESP2 connections of this module's own, one command at a time each, to the server and
with the credentials and database coredis parsed from the URL (TLS with coredis' context). A
lane connection is reused only after a complete reply; one that failed or was interrupted
(a timeout, a cancellation) is closed. The same retry rule holds: a command that failed on a
reused connection before any reply byte (the server restarted) is sent once more on a new
one, and the other idle connections are dropped.

Every failure (coredis errors, OSError, a timeout) becomes :class:`~ailb.errors.StoreUnavailable`
with code ``shared_state_unavailable``, and every call is bounded by ``timeout_s`` in all
(connect, pool wait and reply included): an outage answers within about that, never hangs.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.commands.script import Script as _CoredisScript
from coredis.retry import ConstantRetryPolicy

from ailb.errors import ConfigError, StoreUnavailable

CODE = "shared_state_unavailable"
DEFAULT_TIMEOUT_S = 1.0
LANE_CONNECTIONS = 64  # at most, per client; more callers wait (within timeout_s)


class ReplyError(Exception):
    """An error reply of the server (``-ERR ...``) to a lane command."""


class _Dropped(Exception):
    """The server closed a lane connection."""


_FOREIGN: tuple[type[Exception], ...] = (
    coredis.exceptions.RedisError, OSError, TimeoutError, trio.TooSlowError,
    anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
    trio.BrokenResourceError, trio.ClosedResourceError, ReplyError, _Dropped)
_BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, _Dropped)

Arg = str | int | float | bytes


def _encode(args: Sequence[Arg]) -> bytes:
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


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 reply at ``pos``: (value, the position after it). Bulk strings are bytes,
    nil is None, an error reply is a ReplyError (returned, not raised). Raises _Incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    kind, line, pos = buf[pos], buf[pos + 1:end], end + 2
    if kind == 36:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _INCOMPLETE
        return buf[pos:pos + size], pos + size + 2
    if kind == 42:  # * array
        size = int(line)
        if size < 0:
            return None, pos
        items = []
        for _ in range(size):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(line), pos
    if kind == 43:  # + simple string
        return line, pos
    if kind == 45:  # - error
        return ReplyError(line.decode(errors="replace")), pos
    raise ReplyError(f"unexpected reply type {chr(kind)!r}")


class _Wire:
    """One lane connection: a command, then its whole reply."""

    __slots__ = ("_buf", "_stream", "received")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buf = b""
        self.received = False  # any reply byte yet (a command that failed before: resent)

    async def call(self, command: bytes) -> Any:
        """The reply to ``command`` (encoded). Raises ReplyError for an error reply."""
        await self._stream.send_all(command)
        while True:
            if self._buf:
                try:
                    reply, pos = _parse(self._buf, 0)
                except _Incomplete:
                    pass
                else:
                    self._buf = self._buf[pos:]
                    if isinstance(reply, ReplyError):
                        raise reply
                    return reply
            data = await self._stream.receive_some(65536)
            if not data:
                raise _Dropped("the server closed the connection")
            self.received = True
            self._buf += data

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


class _Lane:
    """Plain connections for scripts (see the module docstring): idle ones are reused, one
    that failed or was interrupted is closed, at most LANE_CONNECTIONS at once."""

    def __init__(self, host: str | None, port: int, path: str | None,
                 ssl_context: ssl.SSLContext | None, hello: list[bytes],
                 connect_timeout_s: float) -> None:
        self._host, self._port, self._path = host, port, path
        self._ssl = ssl_context
        self._hello = hello  # AUTH / SELECT, each encoded
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[_Wire] = []
        self._limit = trio.CapacityLimiter(LANE_CONNECTIONS)

    @classmethod
    def of(cls, client: coredis.Redis[bytes], timeout_s: float) -> _Lane | None:
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
            hello.append(_encode(["AUTH", username, password] if username else
                                 ["AUTH", password]))
        if options.get("db"):
            hello.append(_encode(["SELECT", int(options["db"])]))
        return cls(host if path is None else None, port or 0, path, context, hello,
                   timeout_s / 2)

    async def _dial(self) -> _Wire:
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
            wire = _Wire(stream)
            try:
                for command in self._hello:
                    await wire.call(command)
            except BaseException:
                await wire.aclose()
                raise
            wire.received = False
            return wire

    async def call(self, command: bytes) -> Any:
        """The reply to ``command``, on an idle connection or a new one."""
        async with self._limit:
            reused = bool(self._idle)
            wire = self._idle.pop() if reused else await self._dial()
            try:
                reply = await wire.call(command)
            except _BROKEN:
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


class Script:
    """A Lua script known to the client: run by SHA (EVALSHA), loaded again after a server
    restart forgot it (NOSCRIPT), by coredis' script helper."""

    __slots__ = ("_eval", "_evalsha", "_script")

    def __init__(self, script: _CoredisScript[bytes], source: str) -> None:
        self._script = script
        self._evalsha = b"$7\r\nEVALSHA\r\n" + _encode([script.sha])[4:]  # after "*N\r\n"
        self._eval = b"$4\r\nEVAL\r\n" + _encode([source])[4:]

    def command(self, keys: Sequence[str], args: Sequence[Arg], by_sha: bool = True) -> bytes:
        """EVALSHA (or EVAL, with the source) of ``keys`` and ``args``, encoded."""
        rest = _encode([len(keys), *keys, *args])
        count, _, rest = rest.partition(b"\r\n")
        head = b"*%d\r\n" % (int(count[1:]) + 2)
        return head + (self._evalsha if by_sha else self._eval) + rest


class Redis:
    """One client (a connection pool) to one Redis/Valkey server. Made by :func:`connect`."""

    def __init__(self, client: coredis.Redis[bytes], timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._lane = _Lane.of(client, timeout_s)

    def close(self) -> None:
        """Close the lane's idle connections (coredis closes its own)."""
        if self._lane is not None:
            self._lane.drop()

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Bound the call by ``timeout_s`` and translate what coredis raises. Cancellation
        (a BaseException) passes through untouched."""
        try:
            with trio.fail_after(self._timeout_s):
                yield
        except _FOREIGN as exc:
            raise StoreUnavailable(f"Redis/Valkey {what} failed: {exc or type(exc).__name__}",
                                   code=CODE) from exc
        except ExceptionGroup as group:  # from coredis' task groups: only if all of it is ours
            _, rest = group.split(_FOREIGN)
            if rest is not None:
                raise
            raise StoreUnavailable(f"Redis/Valkey {what} failed: {group}", code=CODE) from group

    def script(self, source: str) -> Script:
        """A script to :meth:`run` (nothing is sent to the server yet)."""
        return Script(self._client.register_script(source), source)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """The script's reply (bulk strings as bytes, nested lists as lists). Raises
        StoreUnavailable."""
        with self._guard("script"):
            if self._lane is None:
                return await script._script(keys=list(keys), args=list(args))
            try:
                return await self._lane.call(script.command(keys, args))
            except ReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
            # not loaded (a restarted server): EVAL loads it (and runs it once)
            return await self._lane.call(script.command(keys, args, by_sha=False))
        raise AssertionError("unreachable")  # for mypy: _guard re-raises or returns

    async def get(self, key: str) -> bytes | None:
        """Raises StoreUnavailable."""
        with self._guard("GET"):
            return await self._client.get(key)
        raise AssertionError("unreachable")

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """``SET key value PX ttl``. Raises StoreUnavailable."""
        with self._guard("SET"):
            await self._client.set(key, value, px=max(1, int(ttl_s * 1000)))

    async def ping(self) -> None:
        """Raises StoreUnavailable unless the server answers."""
        with self._guard("PING"):
            await self._client.ping()


@asynccontextmanager
async def connect(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> AsyncIterator[Redis]:
    """A client to ``url`` (``redis://``, ``rediss://``, ``unix://``; ``valkey://`` is read as
    ``redis://``), open for the ``async with`` block; its connections close at the end. The
    server need not be up: nothing is dialled until the first command. Raises ConfigError for
    a URL coredis cannot parse."""
    if url.startswith("valkey://"):
        url = "redis://" + url.removeprefix("valkey://")
    elif url.startswith("valkeys://"):
        url = "rediss://" + url.removeprefix("valkeys://")
    try:
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url, decode_responses=False, connect_timeout=timeout_s / 2,
            stream_timeout=timeout_s, pool_timeout=timeout_s,
            retry_policy=ConstantRetryPolicy((coredis.exceptions.ConnectionError,), retries=1,
                                             delay=0.01))
    except (ValueError, coredis.exceptions.RedisError):
        # not the parser's message: it may quote the URL, password included
        raise ConfigError("REDIS_URL", "is not a redis://, rediss:// or unix:// URL") from None
    # coredis' task group (a Trio nursery) wraps whatever the caller's block raises in an
    # ExceptionGroup; the caller gets its own exception back, as from any context manager.
    raised: BaseException | None = None
    try:
        async with client:
            redis = Redis(client, timeout_s)
            try:
                yield redis
            except BaseException as exc:
                raised = exc
                raise
            finally:
                redis.close()
    except BaseExceptionGroup as group:
        if raised is not None and list(group.exceptions) == [raised]:
            raise raised from raised.__cause__
        raise
