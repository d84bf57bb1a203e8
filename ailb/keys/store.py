"""The SQLite edge: keys, spend per (key, period), reservations and the spend ledger, in one
database file under ``AILB_DATA_DIR``; the embedded :class:`ailb.accounting.store.Store`.

No sqlite3 call runs on the Trio thread: each runs in a worker thread, one at a time (a
``CapacityLimiter(1)`` over one connection opened with ``check_same_thread=False``), so a slow
disk or a locked database never stalls the event loop. Calls are taken in the order they were
made. A call is not abandoned when its caller is cancelled: a write has either happened or not
by the time the caller hears of it. sqlite3 errors become ``StoreUnavailable`` (503) here, or
``ConfigError`` when the database cannot be opened.

WAL mode with ``synchronous=NORMAL``: a committed transaction survives the process being killed
(SIGKILL), only an OS crash could lose the last ones. Migrations are numbered in code and applied
in order; ``PRAGMA user_version`` records the last one applied. This is the only module that
imports sqlite3.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import trio

from ailb.accounting import counters
from ailb.accounting.counters import Taken
from ailb.accounting.reservations import KeyLimits, Refusal
from ailb.accounting.store import LedgerRow, Reserved, Settlement
from ailb.audit.entry import AuditEntry
from ailb.errors import ConfigError, StoreUnavailable
from ailb.keys.records import KeyRecord, TeamRecord
from ailb.rag.jobs import RETENTION_S as JOB_RETENTION_S
from ailb.rag.jobs import IngestJob
from ailb.responses.state import RETENTION_S, StoredResponse

T = TypeVar("T")

MIGRATIONS: Final[Sequence[str]] = (
    # 1: keys, spend per period, ledger
    """
    CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        team TEXT NOT NULL DEFAULT '',
        expires_at TEXT,
        active INTEGER NOT NULL DEFAULT 1,
        allowed_models TEXT NOT NULL DEFAULT '[]',
        rpm_limit INTEGER,
        tpm_limit INTEGER,
        max_parallel_requests INTEGER,
        monthly_budget_usd REAL,
        metadata TEXT NOT NULL DEFAULT '{}',
        source TEXT NOT NULL DEFAULT 'api'
    );
    CREATE TABLE spend (
        key_id TEXT NOT NULL,
        period TEXT NOT NULL,
        usd REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, period)
    );
    CREATE TABLE ledger (
        request_id TEXT NOT NULL,
        at TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        status INTEGER NOT NULL,
        latency_ms REAL NOT NULL
    );
    CREATE INDEX ledger_key_at ON ledger (key_id, at);
    """,
    # 2: the RAG collections a key may fill (JSON list of names or globs)
    """
    ALTER TABLE keys ADD COLUMN rag_collections TEXT NOT NULL DEFAULT '[]';
    """,
    # 3: reservations not settled yet (the spend holds them at their worst case)
    """
    CREATE TABLE reservations (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        period TEXT NOT NULL,
        usd REAL NOT NULL
    );
    """,
    # 4: rate-limit counters shared by gateways (worker processes) on this file, and the keys'
    # version (other gateways reload their cached keys when it moves)
    """
    CREATE TABLE counters (
        key_id TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    CREATE TABLE versions (
        name TEXT PRIMARY KEY,
        n INTEGER NOT NULL
    );
    INSERT INTO versions (name, n) VALUES ('keys', 0);
    """,
    # 5: the Responses API's stored responses (ailb/responses/state.py), owned by a key
    """
    CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX responses_created_at ON responses (created_at);
    """,
    # 6: the audit log of admin actions (ailb/audit/): newest first by id, filtered by action
    # or target
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        door TEXT NOT NULL,
        address TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        changes TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX audit_action ON audit (action, id);
    CREATE INDEX audit_target ON audit (target, id);
    """,
    # 7: teams (their limits apply on top of their keys'; their spend is kept under the
    # subject "team:<id>"), and each ledger row's team, for spend reports
    """
    CREATE TABLE teams (
        id TEXT PRIMARY KEY,
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        rpm_limit INTEGER,
        tpm_limit INTEGER,
        max_parallel_requests INTEGER,
        monthly_budget_usd REAL,
        metadata TEXT NOT NULL DEFAULT '{}'
    );
    ALTER TABLE ledger ADD COLUMN team TEXT NOT NULL DEFAULT '';
    CREATE INDEX ledger_at ON ledger (at);
    """,
    # 8: RAG ingest jobs' status (ailb/rag/jobs.py), read by every worker process
    """
    CREATE TABLE rag_jobs (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX rag_jobs_created_at ON rag_jobs (created_at);
    """,
    # 9: the web console's sessions (ailb/console/sessions.py): the SHA-256 of each id only
    """
    CREATE TABLE console_sessions (
        id_hash TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        used_at REAL NOT NULL
    );
    """,
    # 10: each console session is tied to the admin key that opened it (a fingerprint, see
    # ailb/console/sessions.py); sessions from before have none and end
    """
    ALTER TABLE console_sessions ADD COLUMN key_fp TEXT NOT NULL DEFAULT '';
    """,
)
_FIELDS: Final = ("id", "name", "secret_hash", "created_at", "owner", "team", "expires_at",
                  "active", "allowed_models", "rpm_limit", "tpm_limit", "max_parallel_requests",
                  "monthly_budget_usd", "metadata", "source", "rag_collections")


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _row_to_key(row: sqlite3.Row) -> KeyRecord:
    created = _parse_time(row["created_at"])
    assert created is not None
    return KeyRecord(
        id=row["id"], name=row["name"], secret_hash=row["secret_hash"], created_at=created,
        owner=row["owner"], team=row["team"], expires_at=_parse_time(row["expires_at"]),
        active=bool(row["active"]), allowed_models=tuple(json.loads(row["allowed_models"])),
        rpm_limit=row["rpm_limit"], tpm_limit=row["tpm_limit"],
        max_parallel_requests=row["max_parallel_requests"],
        monthly_budget_usd=row["monthly_budget_usd"], metadata=json.loads(row["metadata"]),
        source=row["source"], rag_collections=tuple(json.loads(row["rag_collections"])))


# -- on the worker thread ------------------------------------------------------------------------
@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (a full disk)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # keys' hashes, spend and the ledger: the owner's only. SQLite gives the -wal and -shm files
    # the database file's mode, so the file is made 0600 before SQLite opens it (and one made
    # by an older version is narrowed)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(0o600)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with _transaction(db):
                # statement by statement: executescript would commit on its own
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")
    except BaseException:
        db.close()
        raise
    return db


def _add_spend(db: sqlite3.Connection, key_id: str, period: str, usd: float) -> None:
    db.execute("INSERT INTO spend (key_id, period, usd) VALUES (?, ?, ?) "
               "ON CONFLICT (key_id, period) DO UPDATE SET usd = usd + excluded.usd",
               (key_id, period, usd))


def _read(db: sqlite3.Connection, key_id: str, period: str) -> float:
    row = db.execute("SELECT usd FROM spend WHERE key_id = ? AND period = ?",
                     (key_id, period)).fetchone()
    return 0.0 if row is None else float(row[0])


def _reserve(db: sqlite3.Connection, key_id: str, period: str, usd: float,
             budget_usd: float | None) -> Reserved | None:
    with _transaction(db):  # BEGIN IMMEDIATE: no other writer between the check and the take
        spent = _read(db, key_id, period)
        if budget_usd is not None and spent + usd > budget_usd:
            return None
        reservation_id = uuid.uuid4().hex
        _add_spend(db, key_id, period, usd)
        db.execute("INSERT INTO reservations (id, key_id, period, usd) VALUES (?, ?, ?, ?)",
                   (reservation_id, key_id, period, usd))
        return Reserved(reservation_id, spent + usd)


def _settle(db: sqlite3.Connection, settlements: Sequence[Settlement],
            rows: Sequence[LedgerRow]) -> None:
    with _transaction(db):
        for settlement in settlements:
            row = db.execute("SELECT key_id, period, usd FROM reservations WHERE id = ?",
                             (settlement.reservation_id,)).fetchone()
            if row is None:
                continue
            _add_spend(db, row["key_id"], row["period"], settlement.usd - row["usd"])
            db.execute("DELETE FROM reservations WHERE id = ?", (settlement.reservation_id,))
        db.executemany(
            "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.request_id, _time(r.at), r.key_id, r.model, r.deployment, r.prompt_tokens,
              r.completion_tokens, r.cached_tokens, r.cost_usd, r.status, r.latency_ms,
              r.team) for r in rows])


def _usage(db: sqlite3.Connection, key_id: str, since: datetime) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT substr(at, 1, 10) AS day, model, COUNT(*) AS requests, "
        "SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens, "
        "SUM(cost_usd) AS cost_usd FROM ledger WHERE key_id = ? AND at >= ? "
        "GROUP BY day, model ORDER BY day, model", (key_id, _time(since)))
    return [dict(row) for row in rows]


_GROUPS: Final = {"day": "substr(at, 1, 10)", "key_id": "key_id", "team": "team",
                  "model": "model"}
_TEAM_FIELDS: Final = ("id", "description", "created_at", "rpm_limit", "tpm_limit",
                       "max_parallel_requests", "monthly_budget_usd", "metadata")


def _spend_report(db: sqlite3.Connection, start: datetime, end: datetime,
                  group_by: Sequence[str], filters: Mapping[str, str]) -> list[dict[str, Any]]:
    columns = [f"{_GROUPS[name]} AS {name}" for name in group_by]  # names: _GROUPS' keys only
    where = ["at >= ?", "at < ?"] + [f"{_GROUPS[name]} = ?" for name in filters]
    sql = (f"SELECT {''.join(c + ', ' for c in columns)}COUNT(*) AS requests, "
           "COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, "
           "COALESCE(SUM(completion_tokens), 0) AS completion_tokens, "
           f"COALESCE(SUM(cost_usd), 0.0) AS cost_usd FROM ledger WHERE {' AND '.join(where)}")
    if group_by:
        sql += f" GROUP BY {', '.join(group_by)} ORDER BY {', '.join(group_by)}"
    rows = [dict(row) for row in db.execute(sql, (_time(start), _time(end), *filters.values()))]
    return rows if group_by else [r for r in rows if r["requests"]]


def _row_to_team(row: sqlite3.Row) -> TeamRecord:
    created = _parse_time(row["created_at"])
    assert created is not None
    return TeamRecord(
        id=row["id"], description=row["description"], created_at=created,
        rpm_limit=row["rpm_limit"], tpm_limit=row["tpm_limit"],
        max_parallel_requests=row["max_parallel_requests"],
        monthly_budget_usd=row["monthly_budget_usd"], metadata=json.loads(row["metadata"]))


def _teams(db: sqlite3.Connection) -> list[TeamRecord]:
    return [_row_to_team(r) for r in db.execute("SELECT * FROM teams ORDER BY created_at, id")]


def _put_team(db: sqlite3.Connection, team: TeamRecord) -> None:
    values = (team.id, team.description, _time(team.created_at), team.rpm_limit,
              team.tpm_limit, team.max_parallel_requests, team.monthly_budget_usd,
              json.dumps(dict(team.metadata)))
    with _transaction(db):
        db.execute(f"INSERT OR REPLACE INTO teams ({', '.join(_TEAM_FIELDS)}) "
                   f"VALUES ({', '.join('?' for _ in _TEAM_FIELDS)})", values)
        db.execute("UPDATE versions SET n = n + 1 WHERE name = 'keys'")


def _delete_team(db: sqlite3.Connection, team_id: str) -> bool:
    with _transaction(db):
        gone = db.execute("DELETE FROM teams WHERE id = ?", (team_id,)).rowcount > 0
        db.execute("UPDATE versions SET n = n + 1 WHERE name = 'keys'")
        return gone


def _keys(db: sqlite3.Connection) -> list[KeyRecord]:
    return [_row_to_key(r) for r in db.execute("SELECT * FROM keys ORDER BY created_at")]


def _take(db: sqlite3.Connection, key_id: str, limits: KeyLimits, tokens: int, lease: str,
          lease_s: float) -> Taken | Refusal:
    with _transaction(db):  # BEGIN IMMEDIATE: the other processes wait for the commit
        row = db.execute("SELECT state FROM counters WHERE key_id = ?", (key_id,)).fetchone()
        text, outcome = counters.apply_take(None if row is None else row[0], limits, tokens,
                                            lease, time.time(), lease_s)
        if text is not None:
            db.execute("INSERT OR REPLACE INTO counters (key_id, state) VALUES (?, ?)",
                       (key_id, text))
        return outcome


def _release(db: sqlite3.Connection, key_id: str, lease: str, unused_tokens: int,
             cancel: bool) -> None:
    with _transaction(db):
        row = db.execute("SELECT state FROM counters WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            return
        text = counters.apply_release(row[0], lease, unused_tokens, cancel, time.time())
        if text is not None:
            db.execute("UPDATE counters SET state = ? WHERE key_id = ?", (text, key_id))


def _keys_version(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT n FROM versions WHERE name = 'keys'").fetchone()[0])


def _put_key(db: sqlite3.Connection, key: KeyRecord) -> None:
    values: list[Any] = [key.id, key.name, key.secret_hash, _time(key.created_at), key.owner,
                         key.team, _time(key.expires_at), int(key.active),
                         json.dumps(list(key.allowed_models)), key.rpm_limit, key.tpm_limit,
                         key.max_parallel_requests, key.monthly_budget_usd,
                         json.dumps(dict(key.metadata)), key.source,
                         json.dumps(list(key.rag_collections))]
    placeholders = ", ".join("?" for _ in _FIELDS)
    with _transaction(db):
        db.execute(f"INSERT OR REPLACE INTO keys ({', '.join(_FIELDS)}) "
                   f"VALUES ({placeholders})", values)
        db.execute("UPDATE versions SET n = n + 1 WHERE name = 'keys'")


def _put_response(db: sqlite3.Connection, stored: StoredResponse) -> None:
    with _transaction(db):
        db.execute("INSERT OR REPLACE INTO responses (id, key_id, created_at, data) "
                   "VALUES (?, ?, ?, ?)",
                   (stored.id, stored.key_id, stored.created_at, stored.data()))
        db.execute("DELETE FROM responses WHERE created_at < ?",
                   (stored.created_at - RETENTION_S,))


def _get_response(db: sqlite3.Connection, response_id: str) -> StoredResponse | None:
    row = db.execute("SELECT id, key_id, created_at, data FROM responses WHERE id = ?",
                     (response_id,)).fetchone()
    return None if row is None else StoredResponse.from_data(*row)


def _delete_response(db: sqlite3.Connection, response_id: str) -> bool:
    with _transaction(db):
        return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0


def _add_audit(db: sqlite3.Connection, entry: AuditEntry) -> int:
    with _transaction(db):
        cursor = db.execute(
            "INSERT INTO audit (at, actor, door, address, action, target, changes, outcome) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (_time(entry.at), entry.actor, entry.door, entry.address, entry.action,
             entry.target, json.dumps(entry.changes, separators=(",", ":")), entry.outcome))
        return int(cursor.lastrowid or 0)


def _audit(db: sqlite3.Connection, limit: int, before: int | None, action: str | None,
           target: str | None) -> list[AuditEntry]:
    where, args = [], []
    for clause, value in (("id < ?", before), ("action = ?", action), ("target = ?", target)):
        if value is not None:
            where.append(clause)
            args.append(value)
    sql = "SELECT * FROM audit" + (f" WHERE {' AND '.join(where)}" if where else "")
    rows = db.execute(f"{sql} ORDER BY id DESC LIMIT ?", (*args, limit))
    return [AuditEntry(datetime.fromisoformat(r["at"]), r["actor"], r["door"], r["address"],
                       r["action"], r["target"], json.loads(r["changes"]), r["outcome"],
                       r["id"]) for r in rows]


def _put_rag_job(db: sqlite3.Connection, job: IngestJob) -> None:
    with _transaction(db):
        db.execute("INSERT OR REPLACE INTO rag_jobs (id, created_at, updated_at, data) "
                   "VALUES (?, ?, ?, ?)", (job.id, job.created_at, job.updated_at, job.data()))
        db.execute("DELETE FROM rag_jobs WHERE created_at < ?",
                   (job.created_at - JOB_RETENTION_S,))


def _get_rag_job(db: sqlite3.Connection, job_id: str) -> IngestJob | None:
    row = db.execute("SELECT id, created_at, updated_at, data FROM rag_jobs WHERE id = ?",
                     (job_id,)).fetchone()
    return None if row is None else IngestJob.from_data(*row)


def _put_session(db: sqlite3.Connection, id_hash: str, key_fp: str, now: float,
                 idle_s: float, max_s: float) -> None:
    with _transaction(db):
        db.execute("DELETE FROM console_sessions WHERE used_at < ? OR created_at < ?",
                   (now - idle_s, now - max_s))
        db.execute("INSERT INTO console_sessions (id_hash, key_fp, created_at, used_at) "
                   "VALUES (?, ?, ?, ?)", (id_hash, key_fp, now, now))


def _touch_session(db: sqlite3.Connection, id_hash: str, key_fp: str, now: float,
                   idle_s: float, max_s: float) -> bool:
    with _transaction(db):
        return db.execute("UPDATE console_sessions SET used_at = ? WHERE id_hash = ? AND "
                          "key_fp = ? AND used_at >= ? AND created_at >= ?",
                          (now, id_hash, key_fp, now - idle_s, now - max_s)).rowcount > 0


def _delete_all_sessions(db: sqlite3.Connection) -> int:
    with _transaction(db):
        return db.execute("DELETE FROM console_sessions").rowcount


def _delete_session(db: sqlite3.Connection, id_hash: str) -> bool:
    with _transaction(db):
        return db.execute("DELETE FROM console_sessions WHERE id_hash = ?",
                          (id_hash,)).rowcount > 0


# -- on the Trio thread ---------------------------------------------------------------------------
class SqliteStore:
    """One SQLite connection, used by one worker thread at a time. See the module docstring."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._limiter = trio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        """Open (creating it if need be) and migrate the database at ``path``. Raises
        ConfigError when it cannot be opened or migrated."""
        try:
            return cls(await trio.to_thread.run_sync(_connect, path))
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError("AILB_DATA_DIR", f"cannot open the key store {path}: {exc}") \
                from exc

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await trio.to_thread.run_sync(work, self._db, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"The key store failed: {exc}",
                                   code="key_store_unavailable") from exc

    async def aclose(self) -> None:
        """Close the connection once the calls already made are done."""
        await trio.to_thread.run_sync(self._db.close, limiter=self._limiter)

    async def reserve(self, key_id: str, period: str, usd: float,
                      budget_usd: float | None) -> Reserved | None:
        """See :meth:`ailb.accounting.store.Store.reserve`. Raises StoreUnavailable."""
        return await self._run(partial(_reserve, key_id=key_id, period=period, usd=usd,
                                       budget_usd=budget_usd))

    async def settle(self, settlements: Sequence[Settlement],
                     rows: Sequence[LedgerRow]) -> None:
        """See :meth:`ailb.accounting.store.Store.settle`. Raises StoreUnavailable."""
        await self._run(partial(_settle, settlements=list(settlements), rows=list(rows)))

    async def read(self, key_id: str, period: str) -> float:
        """The key's spend for ``period``. Raises StoreUnavailable."""
        return await self._run(partial(_read, key_id=key_id, period=period))

    async def usage(self, key_id: str, since: datetime) -> list[dict[str, Any]]:
        """Requests, tokens and cost per (day, model) since ``since``. Raises
        StoreUnavailable."""
        return await self._run(partial(_usage, key_id=key_id, since=since))

    async def keys(self) -> list[KeyRecord]:
        """Every key, oldest first. Raises StoreUnavailable."""
        return await self._run(_keys)

    async def put_key(self, key: KeyRecord) -> None:
        """Insert or replace a key (all fields). Raises StoreUnavailable."""
        await self._run(partial(_put_key, key=key))

    async def keys_version(self) -> int:
        """See :meth:`ailb.accounting.store.Store.keys_version`. Raises StoreUnavailable."""
        return await self._run(_keys_version)

    async def teams(self) -> list[TeamRecord]:
        """Every team, oldest first. Raises StoreUnavailable."""
        return await self._run(_teams)

    async def put_team(self, team: TeamRecord) -> None:
        """Insert or replace a team (all fields). Raises StoreUnavailable."""
        await self._run(partial(_put_team, team=team))

    async def delete_team(self, team_id: str) -> bool:
        """Remove a team; False when there was none. Raises StoreUnavailable."""
        return await self._run(partial(_delete_team, team_id=team_id))

    async def spend_report(self, start: datetime, end: datetime, group_by: Sequence[str],
                           filters: Mapping[str, str]) -> list[dict[str, Any]]:
        """See :meth:`ailb.accounting.store.Store.spend_report`. Raises StoreUnavailable."""
        return await self._run(partial(_spend_report, start=start, end=end,
                                       group_by=list(group_by), filters=dict(filters)))

    async def ping(self) -> None:
        """Raises StoreUnavailable unless the database answers."""
        await self._run(_keys_version)

    # -- the audit log (ailb/audit/log.py's AuditStore) -----------------------------------
    async def add_audit(self, entry: AuditEntry) -> int:
        """Append an audit entry (committed when it returns); its id. Raises
        StoreUnavailable."""
        return await self._run(partial(_add_audit, entry=entry))

    async def audit(self, limit: int, before: int | None = None, action: str | None = None,
                    target: str | None = None) -> list[AuditEntry]:
        """Up to ``limit`` audit entries, newest first. Raises StoreUnavailable."""
        return await self._run(partial(_audit, limit=limit, before=before, action=action,
                                       target=target))

    # -- ResponseStore: the Responses API's state (ailb/responses/state.py) ---------------
    async def put_response(self, stored: StoredResponse) -> None:
        """Insert or replace a stored response (committed when it returns). Raises
        StoreUnavailable."""
        await self._run(partial(_put_response, stored=stored))

    async def get_response(self, response_id: str) -> StoredResponse | None:
        """A stored response, or None. Raises StoreUnavailable."""
        return await self._run(partial(_get_response, response_id=response_id))

    async def delete_response(self, response_id: str) -> bool:
        """Forget a stored response; False when there was none. Raises StoreUnavailable."""
        return await self._run(partial(_delete_response, response_id=response_id))

    # -- RagJobStore: RAG ingest jobs' status (ailb/rag/jobs.py) -------------------------
    async def put_rag_job(self, job: IngestJob) -> None:
        """Insert or replace an ingest job's status. Raises StoreUnavailable."""
        await self._run(partial(_put_rag_job, job=job))

    async def get_rag_job(self, job_id: str) -> IngestJob | None:
        """An ingest job's status, or None. Raises StoreUnavailable."""
        return await self._run(partial(_get_rag_job, job_id=job_id))

    # -- SessionStore (ailb/console/sessions.py) ------------------------------------------------
    async def put_session(self, id_hash: str, key_fp: str, now: float, idle_s: float,
                          max_s: float) -> None:
        """Record a new console session; drop expired ones. Raises StoreUnavailable."""
        await self._run(partial(_put_session, id_hash=id_hash, key_fp=key_fp, now=now,
                                idle_s=idle_s, max_s=max_s))

    async def touch_session(self, id_hash: str, key_fp: str, now: float, idle_s: float,
                            max_s: float) -> bool:
        """Mark a live session of this admin key used; False when it is unknown, another
        key's or expired. Raises StoreUnavailable."""
        return await self._run(partial(_touch_session, id_hash=id_hash, key_fp=key_fp,
                                       now=now, idle_s=idle_s, max_s=max_s))

    async def delete_all_sessions(self) -> int:
        """Forget every console session. Raises StoreUnavailable."""
        return await self._run(_delete_all_sessions)

    async def delete_session(self, id_hash: str) -> bool:
        """Forget a console session. Raises StoreUnavailable."""
        return await self._run(partial(_delete_session, id_hash=id_hash))

    # -- SharedCounters: the rate limits of worker processes sharing this file ---------------
    async def take(self, key_id: str, limits: KeyLimits, tokens: int, lease: str,
                   lease_s: float) -> Taken | Refusal:
        """See :class:`ailb.accounting.counters.SharedCounters`; the clock is the machine's
        wall clock (every process sharing the file runs on this machine). Raises
        StoreUnavailable."""
        return await self._run(partial(_take, key_id=key_id, limits=limits, tokens=tokens,
                                       lease=lease, lease_s=lease_s))

    async def release(self, key_id: str, lease: str, unused_tokens: int,
                      cancel: bool) -> None:
        """See :class:`ailb.accounting.counters.SharedCounters`. Raises StoreUnavailable."""
        await self._run(partial(_release, key_id=key_id, lease=lease,
                                unused_tokens=unused_tokens, cancel=cancel))
