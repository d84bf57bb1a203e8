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
0.02 ms for a round trip on a Trio socket. They are sent by :class:`Lane`, a small pool of
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
from ailb.shared.lane import Arg, Dropped, Lane, ReplyError, encode

CODE = "shared_state_unavailable"
DEFAULT_TIMEOUT_S = 1.0
DOWN_S = 1.0  # after a failure, calls fail at once this long (a PING still tries)



_FOREIGN: tuple[type[Exception], ...] = (
    coredis.exceptions.RedisError, OSError, TimeoutError, trio.TooSlowError,
    anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
    trio.BrokenResourceError, trio.ClosedResourceError, ReplyError, Dropped)


class Script:
    """A Lua script known to the client: run by SHA (EVALSHA), loaded again after a server
    restart forgot it (NOSCRIPT), by coredis' script helper."""

    __slots__ = ("_eval", "_evalsha", "_script")

    def __init__(self, script: _CoredisScript[bytes], source: str) -> None:
        self._script = script
        self._evalsha = b"$7\r\nEVALSHA\r\n" + encode([script.sha])[4:]  # after "*N\r\n"
        self._eval = b"$4\r\nEVAL\r\n" + encode([source])[4:]

    def command(self, keys: Sequence[str], args: Sequence[Arg], by_sha: bool = True) -> bytes:
        """EVALSHA (or EVAL, with the source) of ``keys`` and ``args``, encoded."""
        rest = encode([len(keys), *keys, *args])
        count, _, rest = rest.partition(b"\r\n")
        head = b"*%d\r\n" % (int(count[1:]) + 2)
        return head + (self._evalsha if by_sha else self._eval) + rest


class Redis:
    """One client (a connection pool) to one Redis/Valkey server. Made by :func:`connect`."""

    def __init__(self, client: coredis.Redis[bytes], timeout_s: float,
                 down_s: float = DOWN_S) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._down_s = down_s
        self._down_until = 0.0  # Trio clock: calls fail at once until then (see _guard)
        self._lane = Lane.of(client, timeout_s)

    def close(self) -> None:
        """Close the lane's idle connections (coredis closes its own)."""
        if self._lane is not None:
            self._lane.drop()

    @contextmanager
    def _guard(self, what: str, probe: bool = False) -> Iterator[None]:
        """Bound the call by ``timeout_s`` and translate what coredis raises. Cancellation
        (a BaseException) passes through untouched. After a failure, calls fail at once for
        ``down_s`` (a server that hangs would otherwise cost every request a timeout per
        call); a ``probe`` (PING) always tries, and its success lets calls through again."""
        if not probe and trio.current_time() < self._down_until:
            raise StoreUnavailable(f"Redis/Valkey {what} skipped: the server failed just now",
                                   code=CODE)
        try:
            with trio.fail_after(self._timeout_s):
                yield
        except _FOREIGN as exc:
            self._trip(exc)
            raise StoreUnavailable(f"Redis/Valkey {what} failed: {exc or type(exc).__name__}",
                                   code=CODE) from exc
        except ExceptionGroup as group:  # from coredis' task groups: only if all of it is ours
            _, rest = group.split(_FOREIGN)
            if rest is not None:
                raise
            self._trip(group)
            raise StoreUnavailable(f"Redis/Valkey {what} failed: {group}", code=CODE) from group
        if probe:
            self._down_until = 0.0

    def _trip(self, exc: BaseException) -> None:
        """A server that failed to answer (not one that answered with an error) is skipped
        for ``down_s``."""
        if isinstance(exc, ExceptionGroup) or not isinstance(
                exc, ReplyError | coredis.exceptions.ResponseError):
            self._down_until = trio.current_time() + self._down_s

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
        with self._guard("PING", probe=True):
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
