"""The store's calls as SQL, each one a function of a connection, run on a worker thread by
:class:`ailb.stores.postgres.PostgresStore`; every write is one transaction. The semantics are
the SQLite store's (:mod:`ailb.keys.store`), call for call; what differs is how a transaction
gets the exclusion SQLite's ``BEGIN IMMEDIATE`` gives for free:

* A reservation is one statement: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` locks its
  (key, period) spend row, checks the budget against the row's latest value and adds to the
  spend, and records the reservation, before the lock is released by the commit: concurrent
  reservations from any number of gateways queue on that row, so the budget is exact.
* A settlement batch is one statement: it deletes its reservations ``RETURNING`` them (of two
  gateways settling the same one, the second finds nothing), updates the spend rows in sorted
  order (two batches touching the same keys cannot deadlock) and inserts the ledger rows,
  skipping those already there.
* The counters row of a key is locked the same way; its JSON is changed by the pure
  :func:`ailb.accounting.counters.apply_take` / ``apply_release`` in Python, at the database
  server's clock read in the statement that took the lock (after any wait for it), so every
  gateway on every machine uses one clock.

Raises psycopg errors; :mod:`ailb.stores.postgres` translates them.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import Connection
from psycopg.rows import TupleRow, dict_row
from psycopg.types.json import Jsonb

from ailb.accounting import counters
from ailb.accounting.counters import Taken
from ailb.accounting.reservations import KeyLimits, Refusal
from ailb.accounting.store import LedgerRow, Reserved, Settlement
from ailb.audit.entry import AuditEntry
from ailb.keys.records import KeyRecord, TeamRecord
from ailb.rag.jobs import RETENTION_S as JOB_RETENTION_S
from ailb.rag.jobs import IngestJob
from ailb.responses.state import RETENTION_S, StoredResponse

Conn = Connection[TupleRow]

_FIELDS: Final = ("id", "name", "secret_hash", "created_at", "owner", "team", "expires_at",
                  "active", "allowed_models", "rpm_limit", "tpm_limit", "max_parallel_requests",
                  "monthly_budget_usd", "metadata", "source", "rag_collections")
_PUT_KEY: Final = (
    f"INSERT INTO keys ({', '.join(_FIELDS)}) VALUES ({', '.join('%s' for _ in _FIELDS)}) "
    f"ON CONFLICT (id) DO UPDATE SET "
    f"{', '.join(f'{f} = EXCLUDED.{f}' for f in _FIELDS if f != 'id')}")
_NOW: Final = "extract(epoch FROM clock_timestamp())::float8"


def _utc(value: datetime | None) -> datetime | None:
    # as the SQLite store: a naive time is the machine's local time, stored as UTC
    return None if value is None else value.astimezone(UTC)


def _key(row: dict[str, Any]) -> KeyRecord:
    return KeyRecord(
        id=row["id"], name=row["name"], secret_hash=row["secret_hash"],
        created_at=row["created_at"], owner=row["owner"], team=row["team"],
        expires_at=row["expires_at"], active=row["active"],
        allowed_models=tuple(row["allowed_models"]), rpm_limit=row["rpm_limit"],
        tpm_limit=row["tpm_limit"], max_parallel_requests=row["max_parallel_requests"],
        monthly_budget_usd=row["monthly_budget_usd"], metadata=row["metadata"],
        source=row["source"], rag_collections=tuple(row["rag_collections"]))


def ping(conn: Conn) -> None:
    conn.execute("SELECT 1")


def read(conn: Conn, key_id: str, period: str) -> float:
    row = conn.execute("SELECT usd FROM spend WHERE key_id = %s AND period = %s",
                       (key_id, period)).fetchone()
    return 0.0 if row is None else float(row[0])


# One statement, one round trip: the spend row is created or updated under its row lock only
# when the budget allows (a first reservation larger than the budget inserts nothing, a later
# one fails the DO UPDATE's WHERE), and the reservation is recorded in the same statement.
_RESERVE: Final = """
    WITH taken AS (
        INSERT INTO spend AS s (key_id, period, usd)
        SELECT %(key)s, %(period)s, %(usd)s
        WHERE %(budget)s::float8 IS NULL OR %(usd)s::float8 <= %(budget)s::float8
        ON CONFLICT (key_id, period) DO UPDATE SET usd = s.usd + EXCLUDED.usd
        WHERE %(budget)s::float8 IS NULL OR s.usd + EXCLUDED.usd <= %(budget)s::float8
        RETURNING s.usd
    ), recorded AS (
        INSERT INTO reservations (id, key_id, period, usd)
        SELECT %(id)s, %(key)s, %(period)s, %(usd)s FROM taken
        RETURNING id
    )
    SELECT recorded.id, taken.usd FROM recorded, taken
"""


def reserve(conn: Conn, key_id: str, period: str, usd: float,
            budget_usd: float | None) -> Reserved | None:
    row = conn.execute(_RESERVE, {"key": key_id, "period": period, "usd": usd,
                                  "budget": budget_usd, "id": uuid.uuid4().hex}).fetchone()
    return None if row is None else Reserved(str(row[0]), float(row[1]))


# One statement, one round trip (atomic in autocommit): the reservations are deleted
# RETURNING what they held (of two gateways settling the same one, the second finds nothing),
# the spend rows get their deltas in (key, period) order (two batches touching the same keys
# cannot deadlock), and the ledger rows already there are skipped. Every part runs to
# completion whether or not the final INSERT reads it. The batch crosses as two JSON texts:
# one parameter each, where psycopg would adapt every element of an array.
_SETTLE: Final = """
    WITH actual AS (
        SELECT key AS id, value::float8 AS usd FROM json_each_text(%(actual)s::json)
    ), gone AS (
        DELETE FROM reservations r USING actual a WHERE r.id = a.id
        RETURNING r.key_id, r.period, a.usd - r.usd AS delta
    ), spent AS (
        INSERT INTO spend AS s (key_id, period, usd)
        SELECT key_id, period, sum(delta) FROM gone GROUP BY key_id, period
        ORDER BY key_id, period
        ON CONFLICT (key_id, period) DO UPDATE SET usd = s.usd + EXCLUDED.usd
        RETURNING 1
    )
    INSERT INTO ledger SELECT * FROM json_populate_recordset(NULL::ledger, %(rows)s::json)
    ON CONFLICT (request_id, at) DO NOTHING
"""


def _number(value: float) -> float | str:
    """A float for JSON: NaN and infinities as the text PostgreSQL reads (JSON has none)."""
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def settle(conn: Conn, settlements: Sequence[Settlement], rows: Sequence[LedgerRow]) -> None:
    actual = {s.reservation_id: _number(s.usd) for s in settlements}
    ledger = [{"request_id": r.request_id, "at": r.at.astimezone(UTC).isoformat(),  # as _utc
               "key_id": r.key_id, "model": r.model, "deployment": r.deployment,
               "prompt_tokens": int(r.prompt_tokens),
               "completion_tokens": int(r.completion_tokens),
               "cached_tokens": int(r.cached_tokens), "cost_usd": _number(r.cost_usd),
               "status": int(r.status), "latency_ms": _number(r.latency_ms),
               "team": r.team} for r in rows]
    conn.execute(_SETTLE, {"actual": json.dumps(actual, separators=(",", ":")),
                           "rows": json.dumps(ledger, separators=(",", ":"))})


def usage(conn: Conn, key_id: str, since: datetime) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        # UTC days, and models in byte order (COLLATE "C"): the SQLite store's answers
        cur.execute(
            "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, model, "
            "count(*) AS requests, sum(prompt_tokens)::bigint AS prompt_tokens, "
            "sum(completion_tokens)::bigint AS completion_tokens, sum(cost_usd) AS cost_usd "
            "FROM ledger WHERE key_id = %s AND at >= %s "
            "GROUP BY day, model ORDER BY day, model COLLATE \"C\"", (key_id, _utc(since)))
        return cur.fetchall()


# the spend report's groups: UTC days, text in byte order (the SQLite store's answers)
_GROUPS: Final = {"day": "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "key_id": "key_id",
                  "team": "team", "model": "model"}
_TEAM_FIELDS: Final = ("id", "description", "created_at", "rpm_limit", "tpm_limit",
                       "max_parallel_requests", "monthly_budget_usd", "metadata")
_PUT_TEAM: Final = (
    f"INSERT INTO teams ({', '.join(_TEAM_FIELDS)}) "
    f"VALUES ({', '.join('%s' for _ in _TEAM_FIELDS)}) ON CONFLICT (id) DO UPDATE SET "
    f"{', '.join(f'{f} = EXCLUDED.{f}' for f in _TEAM_FIELDS if f != 'id')}")


def spend_report(conn: Conn, start: datetime, end: datetime, group_by: Sequence[str],
                 filters: Mapping[str, str]) -> list[dict[str, Any]]:
    columns = [f"{_GROUPS[name]} AS {name}" for name in group_by]  # names: _GROUPS' keys only
    where = ["at >= %s", "at < %s"] + [f"{_GROUPS[name]} = %s" for name in filters]
    sql = (f"SELECT {''.join(c + ', ' for c in columns)}count(*) AS requests, "
           "COALESCE(sum(prompt_tokens), 0)::bigint AS prompt_tokens, "
           "COALESCE(sum(completion_tokens), 0)::bigint AS completion_tokens, "
           "COALESCE(sum(cost_usd), 0)::float8 AS cost_usd "
           f"FROM ledger WHERE {' AND '.join(where)}")
    if group_by:
        exprs = [_GROUPS[name] for name in group_by]
        order = ", ".join(f'{expr} COLLATE "C"' for expr in exprs)
        sql += f" GROUP BY {', '.join(exprs)} ORDER BY {order}"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, (_utc(start), _utc(end), *filters.values()))
        rows = cur.fetchall()
    return rows if group_by else [r for r in rows if r["requests"]]


def _team(row: dict[str, Any]) -> TeamRecord:
    return TeamRecord(
        id=row["id"], description=row["description"], created_at=row["created_at"],
        rpm_limit=row["rpm_limit"], tpm_limit=row["tpm_limit"],
        max_parallel_requests=row["max_parallel_requests"],
        monthly_budget_usd=row["monthly_budget_usd"], metadata=row["metadata"])


def teams(conn: Conn) -> list[TeamRecord]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM teams ORDER BY created_at, id")
        return [_team(row) for row in cur.fetchall()]


def put_team(conn: Conn, team: TeamRecord) -> None:
    values = (team.id, team.description, _utc(team.created_at), team.rpm_limit,
              team.tpm_limit, team.max_parallel_requests, team.monthly_budget_usd,
              Jsonb(dict(team.metadata)))
    with conn.transaction():
        conn.execute(_PUT_TEAM, values)
        conn.execute("UPDATE versions SET n = n + 1 WHERE name = 'keys'")


def delete_team(conn: Conn, team_id: str) -> bool:
    with conn.transaction():
        gone = conn.execute("DELETE FROM teams WHERE id = %s", (team_id,)).rowcount > 0
        conn.execute("UPDATE versions SET n = n + 1 WHERE name = 'keys'")
        return gone


def keys(conn: Conn) -> list[KeyRecord]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM keys ORDER BY created_at, id")
        return [_key(row) for row in cur.fetchall()]


def put_key(conn: Conn, key: KeyRecord) -> None:
    values = (key.id, key.name, key.secret_hash, _utc(key.created_at), key.owner, key.team,
              _utc(key.expires_at), key.active, Jsonb(list(key.allowed_models)), key.rpm_limit,
              key.tpm_limit, key.max_parallel_requests, key.monthly_budget_usd,
              Jsonb(dict(key.metadata)), key.source, Jsonb(list(key.rag_collections)))
    with conn.transaction():
        conn.execute(_PUT_KEY, values)
        conn.execute("UPDATE versions SET n = n + 1 WHERE name = 'keys'")


def keys_version(conn: Conn) -> int:
    row = conn.execute("SELECT n FROM versions WHERE name = 'keys'").fetchone()
    return 0 if row is None else int(row[0])


def _locked_counters(conn: Conn, key_id: str) -> tuple[str, float]:
    """The key's counters, locked until the transaction ends, and the server's time then."""
    conn.execute("INSERT INTO counters (key_id, state) VALUES (%s, '') "
                 "ON CONFLICT DO NOTHING", (key_id,))
    row = conn.execute(f"SELECT state, {_NOW} FROM counters WHERE key_id = %s FOR UPDATE",
                       (key_id,)).fetchone()
    assert row is not None  # inserted above, and counters rows are never deleted
    return str(row[0]), float(row[1])


def take(conn: Conn, key_id: str, limits: KeyLimits, tokens: int, lease: str,
         lease_s: float) -> Taken | Refusal:
    with conn.transaction():
        text, now = _locked_counters(conn, key_id)
        new, outcome = counters.apply_take(text, limits, tokens, lease, now, lease_s)
        if new is not None:
            conn.execute("UPDATE counters SET state = %s WHERE key_id = %s", (new, key_id))
        return outcome


def release(conn: Conn, key_id: str, lease: str, unused_tokens: int, cancel: bool) -> None:
    with conn.transaction():
        row = conn.execute(f"SELECT state, {_NOW} FROM counters WHERE key_id = %s FOR UPDATE",
                           (key_id,)).fetchone()
        if row is None:  # never taken: nothing to give back
            return
        new = counters.apply_release(str(row[0]), lease, unused_tokens, cancel, float(row[1]))
        if new is not None:
            conn.execute("UPDATE counters SET state = %s WHERE key_id = %s", (new, key_id))


def put_response(conn: Conn, stored: StoredResponse) -> None:
    conn.execute("INSERT INTO responses (id, key_id, created_at, data) VALUES (%s, %s, %s, %s) "
                 "ON CONFLICT (id) DO UPDATE SET key_id = EXCLUDED.key_id, "
                 "created_at = EXCLUDED.created_at, data = EXCLUDED.data",
                 (stored.id, stored.key_id, stored.created_at, stored.data()))
    conn.execute("DELETE FROM responses WHERE created_at < %s",
                 (stored.created_at - RETENTION_S,))


def get_response(conn: Conn, response_id: str) -> StoredResponse | None:
    row = conn.execute("SELECT id, key_id, created_at, data FROM responses WHERE id = %s",
                       (response_id,)).fetchone()
    return None if row is None else StoredResponse.from_data(*row)


def delete_response(conn: Conn, response_id: str) -> bool:
    return conn.execute("DELETE FROM responses WHERE id = %s", (response_id,)).rowcount > 0


def add_audit(conn: Conn, entry: AuditEntry) -> int:
    row = conn.execute(
        "INSERT INTO audit (at, actor, door, address, action, target, changes, outcome) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (_utc(entry.at), entry.actor, entry.door, entry.address, entry.action, entry.target,
         Jsonb(entry.changes), entry.outcome)).fetchone()
    assert row is not None  # RETURNING gives the row inserted
    return int(row[0])


def audit(conn: Conn, limit: int, before: int | None, action: str | None,
          target: str | None) -> list[AuditEntry]:
    # a NULL parameter is no filter; the casts tell PostgreSQL the parameters' types
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM audit WHERE (%(before)s::bigint IS NULL OR id < %(before)s) "
            "AND (%(action)s::text IS NULL OR action = %(action)s) "
            "AND (%(target)s::text IS NULL OR target = %(target)s) "
            "ORDER BY id DESC LIMIT %(limit)s",
            {"before": before, "action": action, "target": target, "limit": limit})
        return [AuditEntry(r["at"], r["actor"], r["door"], r["address"], r["action"],
                           r["target"], r["changes"], r["outcome"], int(r["id"]))
                for r in cur.fetchall()]


def put_rag_job(conn: Conn, job: IngestJob) -> None:
    conn.execute("INSERT INTO rag_jobs (id, created_at, updated_at, data) "
                 "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                 "updated_at = EXCLUDED.updated_at, data = EXCLUDED.data",
                 (job.id, job.created_at, job.updated_at, job.data()))
    conn.execute("DELETE FROM rag_jobs WHERE created_at < %s",
                 (job.created_at - JOB_RETENTION_S,))


def get_rag_job(conn: Conn, job_id: str) -> IngestJob | None:
    row = conn.execute("SELECT id, created_at, updated_at, data FROM rag_jobs WHERE id = %s",
                       (job_id,)).fetchone()
    return None if row is None else IngestJob.from_data(*row)


def put_session(conn: Conn, id_hash: str, key_fp: str, now: float, idle_s: float,
                max_s: float) -> None:
    conn.execute("DELETE FROM console_sessions WHERE used_at < %s OR created_at < %s",
                 (now - idle_s, now - max_s))
    conn.execute("INSERT INTO console_sessions (id_hash, key_fp, created_at, used_at) "
                 "VALUES (%s, %s, %s, %s)", (id_hash, key_fp, now, now))


def touch_session(conn: Conn, id_hash: str, key_fp: str, now: float, idle_s: float,
                  max_s: float) -> bool:
    return conn.execute("UPDATE console_sessions SET used_at = %s WHERE id_hash = %s AND "
                        "key_fp = %s AND used_at >= %s AND created_at >= %s",
                        (now, id_hash, key_fp, now - idle_s, now - max_s)).rowcount > 0


def delete_all_sessions(conn: Conn) -> int:
    return conn.execute("DELETE FROM console_sessions").rowcount


def delete_session(conn: Conn, id_hash: str) -> bool:
    return conn.execute("DELETE FROM console_sessions WHERE id_hash = %s",
                        (id_hash,)).rowcount > 0
