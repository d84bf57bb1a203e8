"""The PostgreSQL edge (``DATABASE_URL``): keys, spend per (key, period), reservations, the
ledger and the shared rate-limit counters, for gateways on several machines. Implements
:class:`ailb.accounting.store.Store` and :class:`ailb.accounting.counters.SharedCounters`; the
SQL is in :mod:`ailb.stores.pg_queries`, the schema in :mod:`ailb.stores.pg_migrations`.

psycopg 3's blocking API over a ``psycopg_pool.ConnectionPool``; each call runs in a Trio worker
thread holding one pooled connection, and a ``CapacityLimiter`` the size of the pool keeps the
threads to the connections there are (the rest wait in Trio, where waiting is cancellable).
Rules, as in the SQLite store:

* The event loop never blocks on the database.
* Each call is bounded as a whole (``deadline_s``, waiting for a thread and a connection
  included); one past it is abandoned, and may still complete in its thread (see ``_run``: that
  errs the safe way). Timeouts inside it: connecting (``connect_timeout``), waiting for a
  pooled connection (``timeout_s``), a statement (``statement_timeout``) and a dead peer
  (``tcp_user_timeout``, keepalives).
* Every psycopg error becomes ``StoreUnavailable`` (503, ``key_store_unavailable``); none
  leaves this package. Failing to open or migrate at start is a ``ConfigError``
  (``DATABASE_URL``), as the SQLite store's is for the data dir.

An outage, then recovery without a restart: the pool checks a connection idle for more than
two seconds before handing it out (a connection used a moment ago is not asked again: that
round trip was a third of a request's cost) and replaces the broken ones in the background;
it gives up a reconnection after ``reconnect_timeout`` and starts a fresh one at the next
request, so a database back after a long outage is found within seconds. While no connection
could be had, calls fail at once for ``down_s`` instead of each waiting ``timeout_s`` in turn
behind the limiter (300 requests in an outage would otherwise queue for a minute).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Final, TypeVar

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from ailb import logs
from ailb.accounting.counters import Taken
from ailb.accounting.reservations import KeyLimits, Refusal
from ailb.accounting.store import LedgerRow, Reserved, Settlement
from ailb.audit.entry import AuditEntry
from ailb.errors import ConfigError, StoreUnavailable
from ailb.keys.records import KeyRecord, TeamRecord
from ailb.rag.jobs import IngestJob
from ailb.responses.state import StoredResponse
from ailb.stores import pg_migrations, pg_queries
from ailb.stores.pg_migrations import Applied, Migration
from ailb.stores.pg_queries import Conn

T = TypeVar("T")
CODE: Final = "key_store_unavailable"
LOG_EVERY_S: Final = 5.0  # a failing database is logged this often at most
_log = logging.getLogger("ailb.stores")
# libpq connection parameters; a value the URL sets itself wins
_DEFAULTS: Final = {"connect_timeout": "2", "application_name": "ailb", "keepalives": "1",
                    "keepalives_idle": "5", "keepalives_interval": "2", "keepalives_count": "2",
                    "tcp_user_timeout": "5000"}


def where(url: str) -> str:
    """``host:port/dbname`` of a URL, never its password (for messages)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "(an invalid DATABASE_URL)"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _configure(statement_timeout_ms: int, conn: Conn) -> None:
    # UTC: times come back as the SQLite store returns them; the timeout bounds a call
    conn.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
    conn.execute("SET TimeZone = 'UTC'")


class _RecentUse:
    """The pool's check of a connection it hands out (a round trip) only for one idle longer
    than ``fresh_s``: a connection used a moment ago is almost surely alive, and one that died
    since fails its call once (503) and is dropped by the pool, like a check would have."""

    def __init__(self, fresh_s: float) -> None:
        self._fresh_s = fresh_s
        self._used: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()

    def check(self, conn: Conn) -> None:
        if time.monotonic() - self._used.get(conn, -self._fresh_s) >= self._fresh_s:
            ConnectionPool.check_connection(conn)

    def used(self, conn: Conn) -> None:
        self._used[conn] = time.monotonic()


def _open_pool(url: str, min_size: int, max_size: int, timeout_s: float,
               statement_timeout_ms: int, recent: _RecentUse) -> ConnectionPool[Conn]:
    """Connect once (so a failure says why, not just "timeout"), then open the pool."""
    given = conninfo_to_dict(url)
    kwargs: dict[str, Any] = {k: v for k, v in _DEFAULTS.items() if k not in given}
    kwargs["autocommit"] = True  # each call says where its transaction is
    psycopg.connect(url, **kwargs).close()
    pool: ConnectionPool[Conn] = ConnectionPool(
        url, kwargs=kwargs, min_size=min_size, max_size=max_size, open=False, name="ailb",
        configure=partial(_configure, statement_timeout_ms),
        check=recent.check, timeout=timeout_s,
        reconnect_timeout=4.0)
    try:
        pool.open(wait=True, timeout=max(5.0, 2 * timeout_s))
    except BaseException:
        pool.close(timeout=0)  # its threads must not outlive a failed start
        raise
    return pool


class PostgresStore:
    """A connection pool and the threads that use it. See the module docstring."""

    def __init__(self, pool: ConnectionPool[Conn], max_size: int, down_s: float,
                 recent: _RecentUse, deadline_s: float = 6.0) -> None:
        self._pool = pool
        self._deadline_s = deadline_s
        self._logged_at = -LOG_EVERY_S
        self._recent = recent
        self._limiter = trio.CapacityLimiter(max_size)
        self._down_s = down_s
        # monotonic time before which calls fail at once; written by worker threads (a float
        # store is atomic under the GIL, and a lost update only shortens the window)
        self._down_until = 0.0

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, min_size: int = 1,
                   max_size: int = 10, timeout_s: float = 2.0,
                   statement_timeout_s: float = 5.0, down_s: float = 1.0) -> PostgresStore:
        """Connect to ``url`` and, with ``migrate``, apply the pending migrations. Raises
        ConnectionError (an OSError) when the database does not answer, ConfigError
        (``DATABASE_URL``) when it refuses us (a bad URL, password, database) or cannot be
        migrated."""
        recent = _RecentUse(fresh_s=2.0)
        try:
            pool = await trio.to_thread.run_sync(partial(
                _open_pool, url, min_size, max_size, timeout_s,
                int(statement_timeout_s * 1000), recent))
        except psycopg.Error as exc:
            message = f"cannot reach the database at {where(url)}: {_describe(exc)}"
            if isinstance(exc, psycopg.OperationalError | PoolTimeout) and \
                    "FATAL:" not in str(exc):
                # down or unreachable, not refused by the server (a password, a database:
                # "FATAL"): exit 1, so that systemd tries again (exit 2 is not restarted)
                raise ConnectionError(f"DATABASE_URL: {message}") from exc
            raise ConfigError("DATABASE_URL", message) from exc
        store = cls(pool, max_size, down_s, recent)
        if migrate:
            try:
                await store.migrate()
            except BaseException as exc:  # cancelled too: the pool's threads must not leak
                with trio.CancelScope(shield=True):
                    await store.aclose()
                if isinstance(exc, StoreUnavailable):
                    raise ConfigError("DATABASE_URL", f"cannot migrate the database at "
                                                      f"{where(url)}: {exc.message}") from exc
                raise
        return store

    def _call(self, work: Callable[[Conn], T]) -> T:
        """On a worker thread: one pooled connection for ``work``."""
        if time.monotonic() < self._down_until:
            raise StoreUnavailable("The key store (PostgreSQL) is unreachable.", code=CODE)
        try:
            with self._pool.connection() as conn:
                result = work(conn)
                self._recent.used(conn)
                return result
        except PoolTimeout:
            self._down_until = time.monotonic() + self._down_s
            raise

    async def _run(self, work: Callable[[Conn], T]) -> T:
        """``work`` on a worker thread, the whole call (waiting for a thread and a connection
        included) bounded by ``deadline_s``: a database that hangs without refusing (paused,
        stuck I/O: the statement timeout is the server's own) costs a request that long, not
        forever. A call past its deadline is abandoned, not stopped: it may still commit.
        That errs the safe way: a reservation then stays charged at its worst case, a take
        ends with its lease, a settlement is retried and is idempotent."""
        try:
            # the caller's cancellation waits for the call (a write has happened or not when
            # it hears); only the deadline abandons it
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self._deadline_s
                return await trio.to_thread.run_sync(self._call, work, limiter=self._limiter,
                                                     abandon_on_cancel=True)
            self._down_until = time.monotonic() + self._down_s  # the next calls fail at once
            raise StoreUnavailable(f"The key store (PostgreSQL) did not answer within "
                                   f"{self._deadline_s:g}s.", code=CODE)
        except psycopg.Error as exc:  # PoolTimeout and PoolClosed included
            # the detail (hosts, users, the server's words) goes to the log, at most every
            # LOG_EVERY_S; callers (and so clients, /healthz) get the kind of failure only
            now = time.monotonic()
            if now >= self._logged_at + LOG_EVERY_S:
                self._logged_at = now
                logs.event(_log, "PostgreSQL call failed", logging.WARNING,
                           error=_describe(exc))
            raise StoreUnavailable(f"The key store (PostgreSQL) failed "
                                   f"({type(exc).__name__}).", code=CODE) from exc

    async def aclose(self) -> None:
        """Close the pool and its connections (calls still running finish first)."""
        await trio.to_thread.run_sync(partial(self._pool.close, timeout=5.0))

    # -- migrations --------------------------------------------------------------------------
    async def migrate(self) -> list[Migration]:
        """Apply the pending migrations (see :mod:`ailb.stores.pg_migrations`); returns those
        applied. Raises StoreUnavailable."""
        return await self._run(pg_migrations.migrate)

    async def migration_status(self) -> tuple[list[Applied], list[Migration]]:
        """The migrations applied, and those pending. Raises StoreUnavailable."""
        return await self._run(pg_migrations.status)

    # -- Store ---------------------------------------------------------------------------------
    async def reserve(self, key_id: str, period: str, usd: float,
                      budget_usd: float | None) -> Reserved | None:
        """See :meth:`ailb.accounting.store.Store.reserve`. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.reserve, key_id=key_id, period=period,
                                       usd=usd, budget_usd=budget_usd))

    async def settle(self, settlements: Sequence[Settlement],
                     rows: Sequence[LedgerRow]) -> None:
        """See :meth:`ailb.accounting.store.Store.settle`; rows already in the ledger are
        skipped. Raises StoreUnavailable."""
        await self._run(partial(pg_queries.settle, settlements=list(settlements),
                                rows=list(rows)))

    async def read(self, key_id: str, period: str) -> float:
        """The key's spend for ``period``. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.read, key_id=key_id, period=period))

    async def usage(self, key_id: str, since: datetime) -> list[dict[str, Any]]:
        """Requests, tokens and cost per (UTC day, model) since ``since``. Raises
        StoreUnavailable."""
        return await self._run(partial(pg_queries.usage, key_id=key_id, since=since))

    async def keys(self) -> list[KeyRecord]:
        """Every key, oldest first. Raises StoreUnavailable."""
        return await self._run(pg_queries.keys)

    async def put_key(self, key: KeyRecord) -> None:
        """Insert or replace a key (all fields) and advance ``keys_version``, in one
        transaction. Raises StoreUnavailable."""
        await self._run(partial(pg_queries.put_key, key=key))

    async def keys_version(self) -> int:
        """See :meth:`ailb.accounting.store.Store.keys_version`. Raises StoreUnavailable."""
        return await self._run(pg_queries.keys_version)

    async def ping(self) -> None:
        """Raises StoreUnavailable unless the database answers."""
        await self._run(pg_queries.ping)

    # -- the audit log (ailb/audit/log.py's AuditStore) -------------------------------------
    async def add_audit(self, entry: AuditEntry) -> int:
        """Append an audit entry (committed when it returns); its id. Raises
        StoreUnavailable."""
        return await self._run(partial(pg_queries.add_audit, entry=entry))

    async def audit(self, limit: int, before: int | None = None, action: str | None = None,
                    target: str | None = None) -> list[AuditEntry]:
        """Up to ``limit`` audit entries, newest first. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.audit, limit=limit, before=before,
                                       action=action, target=target))

    async def teams(self) -> list[TeamRecord]:
        """Every team, oldest first. Raises StoreUnavailable."""
        return await self._run(pg_queries.teams)

    async def put_team(self, team: TeamRecord) -> None:
        """Insert or replace a team and advance ``keys_version``. Raises StoreUnavailable."""
        await self._run(partial(pg_queries.put_team, team=team))

    async def delete_team(self, team_id: str) -> bool:
        """Remove a team; False when there was none. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.delete_team, team_id=team_id))

    async def spend_report(self, start: datetime, end: datetime, group_by: Sequence[str],
                           filters: Mapping[str, str]) -> list[dict[str, Any]]:
        """See :meth:`ailb.accounting.store.Store.spend_report`. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.spend_report, start=start, end=end,
                                       group_by=list(group_by), filters=dict(filters)))

    # -- ResponseStore ---------------------------------------------------------------------------
    async def put_response(self, stored: StoredResponse) -> None:
        """Insert or replace a stored response (committed when it returns). Raises
        StoreUnavailable."""
        await self._run(partial(pg_queries.put_response, stored=stored))

    async def get_response(self, response_id: str) -> StoredResponse | None:
        """A stored response, or None. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.get_response, response_id=response_id))

    async def delete_response(self, response_id: str) -> bool:
        """Forget a stored response; False when there was none. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.delete_response, response_id=response_id))

    # -- RagJobStore ----------------------------------------------------------------------------
    async def put_rag_job(self, job: IngestJob) -> None:
        """Insert or replace an ingest job's status. Raises StoreUnavailable."""
        await self._run(partial(pg_queries.put_rag_job, job=job))

    async def get_rag_job(self, job_id: str) -> IngestJob | None:
        """An ingest job's status, or None. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.get_rag_job, job_id=job_id))

    # -- SessionStore (ailb/console/sessions.py) ------------------------------------------------
    async def put_session(self, id_hash: str, key_fp: str, now: float, idle_s: float,
                          max_s: float) -> None:
        """Record a new console session; drop expired ones. Raises StoreUnavailable."""
        await self._run(partial(pg_queries.put_session, id_hash=id_hash, key_fp=key_fp, now=now,
                                idle_s=idle_s, max_s=max_s))

    async def touch_session(self, id_hash: str, key_fp: str, now: float, idle_s: float,
                            max_s: float) -> bool:
        """Mark a live session of this admin key used; False when it is unknown, another
        key's or expired. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.touch_session, id_hash=id_hash, key_fp=key_fp,
                                       now=now, idle_s=idle_s, max_s=max_s))

    async def delete_all_sessions(self) -> int:
        """Forget every console session. Raises StoreUnavailable."""
        return await self._run(pg_queries.delete_all_sessions)

    async def delete_session(self, id_hash: str) -> bool:
        """Forget a console session. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.delete_session, id_hash=id_hash))

    # -- SharedCounters ------------------------------------------------------------------------
    async def take(self, key_id: str, limits: KeyLimits, tokens: int, lease: str,
                   lease_s: float) -> Taken | Refusal:
        """See :class:`ailb.accounting.counters.SharedCounters`; the clock is the database
        server's, shared by every gateway. Raises StoreUnavailable."""
        return await self._run(partial(pg_queries.take, key_id=key_id, limits=limits,
                                       tokens=tokens, lease=lease, lease_s=lease_s))

    async def release(self, key_id: str, lease: str, unused_tokens: int,
                      cancel: bool) -> None:
        """See :class:`ailb.accounting.counters.SharedCounters`. Raises StoreUnavailable."""
        await self._run(partial(pg_queries.release, key_id=key_id, lease=lease,
                                unused_tokens=unused_tokens, cancel=cancel))


def _describe(exc: psycopg.Error) -> str:
    """The error's kind and first line, for the log and the 503's message. An error of the
    client itself about the URL (no SQLSTATE) is not quoted: psycopg's message repeats the
    part it could not parse, which may be the password."""
    if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None:
        return "ProgrammingError: DATABASE_URL cannot be parsed (check its %-quoting)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
