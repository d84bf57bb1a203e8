"""The embedded store's queries: what runs on the worker thread, one call at a time, over the
one SQLite connection :class:`ailb.keys.store.SqliteStore` holds. Pure SQL and row mapping;
sqlite3 errors go up as they are (the store turns them into ``StoreUnavailable``). With
:mod:`ailb.keys.store` and :mod:`ailb.stores.sqlite_transactions`, the only modules that import
sqlite3."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ailb.accounting import counters
from ailb.accounting.counters import Taken
from ailb.accounting.reservations import KeyLimits, Refusal
from ailb.accounting.store import LedgerRow, Reserved, Settlement
from ailb.audit.entry import AuditEntry
from ailb.keys.records import KeyRecord, TeamRecord
from ailb.rag.jobs import RETENTION_S as JOB_RETENTION_S
from ailb.rag.jobs import IngestJob
from ailb.responses.state import RETENTION_S, StoredResponse
from ailb.stores.sqlite_migrations import MIGRATIONS
from ailb.stores.sqlite_transactions import transaction

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
def connect(path: Path) -> sqlite3.Connection:
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
            with transaction(db):
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


def read(db: sqlite3.Connection, key_id: str, period: str) -> float:
    row = db.execute("SELECT usd FROM spend WHERE key_id = ? AND period = ?",
                     (key_id, period)).fetchone()
    return 0.0 if row is None else float(row[0])


def reserve(db: sqlite3.Connection, key_id: str, period: str, usd: float,
            budget_usd: float | None, reservation_id: str) -> Reserved | None:
    """Inside a transaction (BEGIN IMMEDIATE: no other writer between the check and the take;
    see ``sqlite_transactions.in_transactions``). ``reservation_id``: unique among every
    process's (see ``SqliteStore``)."""
    spent = read(db, key_id, period)
    if budget_usd is not None and spent + usd > budget_usd:
        return None
    _add_spend(db, key_id, period, usd)
    db.execute("INSERT INTO reservations (id, key_id, period, usd) VALUES (?, ?, ?, ?)",
               (reservation_id, key_id, period, usd))
    return Reserved(reservation_id, spent + usd)


def settle(db: sqlite3.Connection, settlements: Sequence[Settlement],
           rows: Sequence[LedgerRow]) -> None:
    """Inside a transaction (see ``sqlite_transactions.in_transactions``)."""
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


def usage(db: sqlite3.Connection, key_id: str, since: datetime) -> list[dict[str, Any]]:
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


def spend_report(db: sqlite3.Connection, start: datetime, end: datetime,
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


def teams(db: sqlite3.Connection) -> list[TeamRecord]:
    return [_row_to_team(r) for r in db.execute("SELECT * FROM teams ORDER BY created_at, id")]


def put_team(db: sqlite3.Connection, team: TeamRecord) -> None:
    values = (team.id, team.description, _time(team.created_at), team.rpm_limit,
              team.tpm_limit, team.max_parallel_requests, team.monthly_budget_usd,
              json.dumps(dict(team.metadata)))
    _put_record(db, "teams", _TEAM_FIELDS, values)


def delete_team(db: sqlite3.Connection, team_id: str) -> bool:
    with transaction(db):
        gone = db.execute("DELETE FROM teams WHERE id = ?", (team_id,)).rowcount > 0
        _bump_keys_version(db)
        return gone


def keys(db: sqlite3.Connection) -> list[KeyRecord]:
    return [_row_to_key(r) for r in db.execute("SELECT * FROM keys ORDER BY created_at")]


def take(db: sqlite3.Connection, key_id: str, limits: KeyLimits, tokens: int, lease: str,
          lease_s: float) -> Taken | Refusal:
    with transaction(db):  # BEGIN IMMEDIATE: the other processes wait for the commit
        row = db.execute("SELECT state FROM counters WHERE key_id = ?", (key_id,)).fetchone()
        text, outcome = counters.apply_take(None if row is None else row[0], limits, tokens,
                                            lease, time.time(), lease_s)
        if text is not None:
            db.execute("INSERT OR REPLACE INTO counters (key_id, state) VALUES (?, ?)",
                       (key_id, text))
        return outcome


def release(db: sqlite3.Connection, key_id: str, lease: str, unused_tokens: int,
             cancel: bool) -> None:
    with transaction(db):
        row = db.execute("SELECT state FROM counters WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            return
        text = counters.apply_release(row[0], lease, unused_tokens, cancel, time.time())
        if text is not None:
            db.execute("UPDATE counters SET state = ? WHERE key_id = ?", (text, key_id))


def _put_record(db: sqlite3.Connection, table: str, fields: Sequence[str],
                values: Sequence[Any]) -> None:
    """Insert or replace one key or team row; every gateway sharing the file reloads them."""
    with transaction(db):
        db.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(fields)}) "
                   f"VALUES ({', '.join('?' for _ in fields)})", values)
        _bump_keys_version(db)


def _bump_keys_version(db: sqlite3.Connection) -> None:
    """Every gateway sharing the file reloads its keys and teams when this moves."""
    db.execute("UPDATE versions SET n = n + 1 WHERE name = 'keys'")


def keys_version(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT n FROM versions WHERE name = 'keys'").fetchone()[0])


def put_key(db: sqlite3.Connection, key: KeyRecord) -> None:
    values: list[Any] = [key.id, key.name, key.secret_hash, _time(key.created_at), key.owner,
                         key.team, _time(key.expires_at), int(key.active),
                         json.dumps(list(key.allowed_models)), key.rpm_limit, key.tpm_limit,
                         key.max_parallel_requests, key.monthly_budget_usd,
                         json.dumps(dict(key.metadata)), key.source,
                         json.dumps(list(key.rag_collections))]
    _put_record(db, "keys", _FIELDS, values)


def put_response(db: sqlite3.Connection, stored: StoredResponse) -> None:
    with transaction(db):
        db.execute("INSERT OR REPLACE INTO responses (id, key_id, created_at, data) "
                   "VALUES (?, ?, ?, ?)",
                   (stored.id, stored.key_id, stored.created_at, stored.data()))
        db.execute("DELETE FROM responses WHERE created_at < ?",
                   (stored.created_at - RETENTION_S,))


def get_response(db: sqlite3.Connection, response_id: str) -> StoredResponse | None:
    row = db.execute("SELECT id, key_id, created_at, data FROM responses WHERE id = ?",
                     (response_id,)).fetchone()
    return None if row is None else StoredResponse.from_data(*row)


def delete_response(db: sqlite3.Connection, response_id: str) -> bool:
    with transaction(db):
        return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0


def add_audit(db: sqlite3.Connection, entry: AuditEntry) -> int:
    with transaction(db):
        cursor = db.execute(
            "INSERT INTO audit (at, actor, door, address, action, target, changes, outcome) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (_time(entry.at), entry.actor, entry.door, entry.address, entry.action,
             entry.target, json.dumps(entry.changes, separators=(",", ":")), entry.outcome))
        return int(cursor.lastrowid or 0)


def audit(db: sqlite3.Connection, limit: int, before: int | None, action: str | None,
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


def put_rag_job(db: sqlite3.Connection, job: IngestJob) -> None:
    with transaction(db):
        db.execute("INSERT OR REPLACE INTO rag_jobs (id, created_at, updated_at, data) "
                   "VALUES (?, ?, ?, ?)", (job.id, job.created_at, job.updated_at, job.data()))
        db.execute("DELETE FROM rag_jobs WHERE created_at < ?",
                   (job.created_at - JOB_RETENTION_S,))


def get_rag_job(db: sqlite3.Connection, job_id: str) -> IngestJob | None:
    row = db.execute("SELECT id, created_at, updated_at, data FROM rag_jobs WHERE id = ?",
                     (job_id,)).fetchone()
    return None if row is None else IngestJob.from_data(*row)


def put_session(db: sqlite3.Connection, id_hash: str, key_fp: str, now: float,
                 idle_s: float, max_s: float) -> None:
    with transaction(db):
        db.execute("DELETE FROM console_sessions WHERE used_at < ? OR created_at < ?",
                   (now - idle_s, now - max_s))
        db.execute("INSERT INTO console_sessions (id_hash, key_fp, created_at, used_at) "
                   "VALUES (?, ?, ?, ?)", (id_hash, key_fp, now, now))


def touch_session(db: sqlite3.Connection, id_hash: str, key_fp: str, now: float,
                   idle_s: float, max_s: float) -> bool:
    with transaction(db):
        return db.execute("UPDATE console_sessions SET used_at = ? WHERE id_hash = ? AND "
                          "key_fp = ? AND used_at >= ? AND created_at >= ?",
                          (now, id_hash, key_fp, now - idle_s, now - max_s)).rowcount > 0


def delete_all_sessions(db: sqlite3.Connection) -> int:
    with transaction(db):
        return db.execute("DELETE FROM console_sessions").rowcount


def delete_session(db: sqlite3.Connection, id_hash: str) -> bool:
    with transaction(db):
        return db.execute("DELETE FROM console_sessions WHERE id_hash = ?",
                          (id_hash,)).rowcount > 0
