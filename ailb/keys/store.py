"""The SQLite edge: keys, spend per (key, period), reservations and the spend ledger, in one
database file under ``AILB_DATA_DIR``; the embedded :class:`ailb.accounting.store.Store`.

No sqlite3 call runs on the Trio thread: each runs on the store's own thread, one at a time
(:class:`ailb.stores.thread.StoreThread`, over one connection opened with
``check_same_thread=False``), so a slow disk or a locked database never stalls the event loop.
Calls are taken in the order they were made. A call is not abandoned when its caller is
cancelled: a write has either happened or not by the time the caller hears of it. Reservations
and settlements queued behind each other are committed together (one transaction, a group
commit: ``sqlite_transactions.in_transactions``); each is told only once it is committed. sqlite3
errors become ``StoreUnavailable`` (503) here, or ``ConfigError`` when the database cannot be
opened.

WAL mode with ``synchronous=NORMAL``: a committed transaction survives the process being killed
(SIGKILL), only an OS crash could lose the last ones. The schema is
:mod:`ailb.stores.sqlite_migrations`, the SQL :mod:`ailb.stores.sqlite_queries` (run on the
store's thread); this module is the Trio side.
"""

from __future__ import annotations

import itertools
import secrets
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import outcome
import trio

from ailb.accounting.counters import Taken
from ailb.accounting.reservations import KeyLimits, Refusal
from ailb.accounting.store import LedgerRow, Reserved, Settlement
from ailb.audit.entry import AuditEntry
from ailb.errors import ConfigError, StoreUnavailable
from ailb.keys.records import KeyRecord, TeamRecord
from ailb.rag.jobs import IngestJob
from ailb.responses.state import StoredResponse
from ailb.stores import sqlite_queries as q
from ailb.stores.sqlite_migrations import MIGRATIONS
from ailb.stores.sqlite_transactions import in_transactions
from ailb.stores.thread import StoreThread

__all__ = ["MIGRATIONS", "Late", "SqliteStore"]

T = TypeVar("T")
# how a write its caller stopped waiting for ended: None (committed), or why it failed
Late = Callable[[StoreUnavailable | None], None]


def _unavailable(exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, trio.ClosedResourceError):
        return StoreUnavailable("The key store is closed.", code="key_store_unavailable")
    return StoreUnavailable(f"The key store failed: {exc}", code="key_store_unavailable")


def _tell(late: Late, result: outcome.Outcome[Any]) -> None:
    """A late write's outcome, told as :meth:`SqliteStore.settle` promises (on the Trio
    thread)."""
    try:
        result.unwrap()
    except StoreUnavailable as exc:
        late(exc)
    except Exception as exc:  # sqlite3's, or a bug: either way the row is not written
        late(_unavailable(exc))
    else:
        late(None)


# -- on the Trio thread ---------------------------------------------------------------------------
class SqliteStore:
    """One SQLite connection, used by one worker thread at a time. See the module docstring."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._thread = StoreThread(db, name="ailb-sqlite")
        # reservation ids: this store's random prefix (every process that opens the file has
        # its own) and a counter; no uuid4 (a getrandom call and an object) per request
        self._id_prefix = secrets.token_hex(8)
        self._id_numbers = itertools.count()

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        """Open (creating it if need be) and migrate the database at ``path``. Raises
        ConfigError when it cannot be opened or migrated."""
        try:
            return cls(await trio.to_thread.run_sync(q.connect, path))
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError("AILB_DATA_DIR", f"cannot open the key store {path}: {exc}") \
                from exc

    async def _run(self, work: Callable[[sqlite3.Connection], T], batched: bool = False,
                   late: Late | None = None) -> T:
        """``work`` on the store's thread; ``batched``: a reservation or a settlement, which
        may share a transaction with those queued beside it (else ``work`` opens its own).
        ``late``: see :meth:`settle`."""
        try:
            return await self._thread.call(work, in_transactions if batched else None,
                                           None if late is None else partial(_tell, late))
        except (sqlite3.Error, trio.ClosedResourceError) as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        """Close the connection once the calls already made are done."""
        await self._thread.close(last=lambda db: db.close())

    async def reserve(self, key_id: str, period: str, usd: float,
                      budget_usd: float | None) -> Reserved | None:
        """See :meth:`ailb.accounting.store.Store.reserve`. Raises StoreUnavailable."""
        reservation_id = f"{self._id_prefix}{next(self._id_numbers):x}"
        return await self._run(partial(q.reserve, key_id=key_id, period=period, usd=usd,
                                       budget_usd=budget_usd, reservation_id=reservation_id),
                               batched=True)

    async def settle(self, settlements: Sequence[Settlement], rows: Sequence[LedgerRow],
                     late: Late | None = None) -> None:
        """See :meth:`ailb.accounting.store.Store.settle`. Raises StoreUnavailable.

        With ``late``, the caller may stop waiting (cancelled, or a deadline of its own) while
        the write is queued or under way: the write still happens (begun, it cannot be
        stopped), and how it ended goes to ``late`` instead, on the Trio thread (None once
        committed, else the StoreUnavailable)."""
        await self._run(partial(q.settle, settlements=list(settlements), rows=list(rows)),
                        batched=True, late=late)

    async def read(self, key_id: str, period: str) -> float:
        """The key's spend for ``period``. Raises StoreUnavailable."""
        return await self._run(partial(q.read, key_id=key_id, period=period))

    async def usage(self, key_id: str, since: datetime) -> list[dict[str, Any]]:
        """Requests, tokens and cost per (day, model) since ``since``. Raises
        StoreUnavailable."""
        return await self._run(partial(q.usage, key_id=key_id, since=since))

    async def keys(self) -> list[KeyRecord]:
        """Every key, oldest first. Raises StoreUnavailable."""
        return await self._run(q.keys)

    async def put_key(self, key: KeyRecord) -> None:
        """Insert or replace a key (all fields). Raises StoreUnavailable."""
        await self._run(partial(q.put_key, key=key))

    async def keys_version(self) -> int:
        """See :meth:`ailb.accounting.store.Store.keys_version`. Raises StoreUnavailable."""
        return await self._run(q.keys_version)

    async def teams(self) -> list[TeamRecord]:
        """Every team, oldest first. Raises StoreUnavailable."""
        return await self._run(q.teams)

    async def put_team(self, team: TeamRecord) -> None:
        """Insert or replace a team (all fields). Raises StoreUnavailable."""
        await self._run(partial(q.put_team, team=team))

    async def delete_team(self, team_id: str) -> bool:
        """Remove a team; False when there was none. Raises StoreUnavailable."""
        return await self._run(partial(q.delete_team, team_id=team_id))

    async def spend_report(self, start: datetime, end: datetime, group_by: Sequence[str],
                           filters: Mapping[str, str]) -> list[dict[str, Any]]:
        """See :meth:`ailb.accounting.store.Store.spend_report`. Raises StoreUnavailable."""
        return await self._run(partial(q.spend_report, start=start, end=end,
                                       group_by=list(group_by), filters=dict(filters)))

    async def ping(self) -> None:
        """Raises StoreUnavailable unless the database answers."""
        await self._run(q.keys_version)

    # -- the audit log (ailb/audit/log.py's AuditStore) -----------------------------------
    async def add_audit(self, entry: AuditEntry) -> int:
        """Append an audit entry (committed when it returns); its id. Raises
        StoreUnavailable."""
        return await self._run(partial(q.add_audit, entry=entry))

    async def audit(self, limit: int, before: int | None = None, action: str | None = None,
                    target: str | None = None) -> list[AuditEntry]:
        """Up to ``limit`` audit entries, newest first. Raises StoreUnavailable."""
        return await self._run(partial(q.audit, limit=limit, before=before, action=action,
                                       target=target))

    # -- ResponseStore: the Responses API's state (ailb/responses/state.py) ---------------
    async def put_response(self, stored: StoredResponse) -> None:
        """Insert or replace a stored response (committed when it returns). Raises
        StoreUnavailable."""
        await self._run(partial(q.put_response, stored=stored))

    async def get_response(self, response_id: str) -> StoredResponse | None:
        """A stored response, or None. Raises StoreUnavailable."""
        return await self._run(partial(q.get_response, response_id=response_id))

    async def delete_response(self, response_id: str) -> bool:
        """Forget a stored response; False when there was none. Raises StoreUnavailable."""
        return await self._run(partial(q.delete_response, response_id=response_id))

    # -- RagJobStore: RAG ingest jobs' status (ailb/rag/jobs.py) -------------------------
    async def put_rag_job(self, job: IngestJob) -> None:
        """Insert or replace an ingest job's status. Raises StoreUnavailable."""
        await self._run(partial(q.put_rag_job, job=job))

    async def get_rag_job(self, job_id: str) -> IngestJob | None:
        """An ingest job's status, or None. Raises StoreUnavailable."""
        return await self._run(partial(q.get_rag_job, job_id=job_id))

    # -- SessionStore (ailb/console/sessions.py) ------------------------------------------------
    async def put_session(self, id_hash: str, key_fp: str, now: float, idle_s: float,
                          max_s: float) -> None:
        """Record a new console session; drop expired ones. Raises StoreUnavailable."""
        await self._run(partial(q.put_session, id_hash=id_hash, key_fp=key_fp, now=now,
                                idle_s=idle_s, max_s=max_s))

    async def touch_session(self, id_hash: str, key_fp: str, now: float, idle_s: float,
                            max_s: float) -> bool:
        """Mark a live session of this admin key used; False when it is unknown, another
        key's or expired. Raises StoreUnavailable."""
        return await self._run(partial(q.touch_session, id_hash=id_hash, key_fp=key_fp,
                                       now=now, idle_s=idle_s, max_s=max_s))

    async def delete_all_sessions(self) -> int:
        """Forget every console session. Raises StoreUnavailable."""
        return await self._run(q.delete_all_sessions)

    async def delete_session(self, id_hash: str) -> bool:
        """Forget a console session. Raises StoreUnavailable."""
        return await self._run(partial(q.delete_session, id_hash=id_hash))

    # -- SharedCounters: the rate limits of worker processes sharing this file ---------------
    async def take(self, key_id: str, limits: KeyLimits, tokens: int, lease: str,
                   lease_s: float) -> Taken | Refusal:
        """See :class:`ailb.accounting.counters.SharedCounters`; the clock is the machine's
        wall clock (every process sharing the file runs on this machine). Raises
        StoreUnavailable."""
        return await self._run(partial(q.take, key_id=key_id, limits=limits, tokens=tokens,
                                       lease=lease, lease_s=lease_s))

    async def release(self, key_id: str, lease: str, unused_tokens: int,
                      cancel: bool) -> None:
        """See :class:`ailb.accounting.counters.SharedCounters`. Raises StoreUnavailable."""
        await self._run(partial(q.release, key_id=key_id, lease=lease,
                                unused_tokens=unused_tokens, cancel=cancel))
