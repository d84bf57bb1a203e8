"""The PostgreSQL schema as numbered migrations, and applying them.

Rules, stated once:

* A migration is never edited once released: a change is a new, higher number.
* ``schema_migrations`` records each one applied (version, name, applied_at).
* Applying takes a transaction-scoped advisory lock first, so gateways starting at once (or
  ``ailb db migrate`` beside a running fleet) apply each migration exactly once: the others
  wait, then find nothing left to do. All pending migrations go in one transaction
  (PostgreSQL's DDL is transactional): a failure leaves the schema as it was.

Money is ``double precision``, like the SQLite store's REAL: the seam and the admission math
speak Python floats, and both stores must give the same answers to the same calls (the budget
check compares the same float sums). ``numeric`` would only be exact in the database and
would be rounded again at the edge.

Part of the PostgreSQL edge: only this module and :mod:`ailb.stores.postgres` import psycopg.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, LiteralString

from psycopg import Connection
from psycopg.rows import TupleRow

# pg_advisory_xact_lock's key: any constant of our own ("AILB" in ASCII, then 1)
LOCK_ID: Final = 0x41494C4201


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: LiteralString


@dataclass(frozen=True, slots=True)
class Applied:
    version: int
    name: str
    applied_at: datetime


MIGRATIONS: Final[Sequence[Migration]] = (
    Migration(1, "keys, spend, reservations, ledger, counters, versions", """
        CREATE TABLE keys (
            id text PRIMARY KEY,
            name text NOT NULL,
            secret_hash text NOT NULL,
            created_at timestamptz NOT NULL,
            owner text NOT NULL DEFAULT '',
            team text NOT NULL DEFAULT '',
            expires_at timestamptz,
            active boolean NOT NULL DEFAULT true,
            allowed_models jsonb NOT NULL DEFAULT '[]',
            rpm_limit bigint,
            tpm_limit bigint,
            max_parallel_requests bigint,
            monthly_budget_usd double precision,
            metadata jsonb NOT NULL DEFAULT '{}',
            source text NOT NULL DEFAULT 'api',
            rag_collections jsonb NOT NULL DEFAULT '[]'
        );
        CREATE TABLE spend (
            key_id text NOT NULL,
            period text NOT NULL,
            usd double precision NOT NULL DEFAULT 0,
            PRIMARY KEY (key_id, period)
        );
        -- reservations not settled yet (the spend holds them at their worst case)
        CREATE TABLE reservations (
            id text PRIMARY KEY,
            key_id text NOT NULL,
            period text NOT NULL,
            usd double precision NOT NULL
        );
        CREATE TABLE ledger (
            request_id text NOT NULL,
            at timestamptz NOT NULL,
            key_id text NOT NULL,
            model text NOT NULL,
            deployment text NOT NULL,
            prompt_tokens bigint NOT NULL,
            completion_tokens bigint NOT NULL,
            cached_tokens bigint NOT NULL,
            cost_usd double precision NOT NULL,
            status integer NOT NULL,
            latency_ms double precision NOT NULL
        );
        CREATE INDEX ledger_key_at ON ledger (key_id, at);
        -- a batch retried after a commit whose acknowledgement was lost adds nothing. Not
        -- request_id alone: it may be the client's own x-request-id, which a client can reuse;
        -- a retried row is the same value, down to its microsecond timestamp.
        CREATE UNIQUE INDEX ledger_once ON ledger (request_id, at);
        -- the shared rate-limit counters, one JSON text per key (accounting/counters.py)
        CREATE TABLE counters (
            key_id text PRIMARY KEY,
            state text NOT NULL
        );
        -- the keys' version: other gateways reload their cached keys when it moves
        CREATE TABLE versions (
            name text PRIMARY KEY,
            n bigint NOT NULL
        );
        INSERT INTO versions (name, n) VALUES ('keys', 0);
    """),
    Migration(2, "responses (the Responses API's stored responses)", """
        CREATE TABLE responses (
            id text PRIMARY KEY,
            key_id text NOT NULL,
            created_at bigint NOT NULL,
            data text NOT NULL
        );
        CREATE INDEX responses_created_at ON responses (created_at);
    """),
    Migration(3, "audit (the log of admin actions)", """
        CREATE TABLE audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL,
            actor text NOT NULL,
            door text NOT NULL,
            address text NOT NULL,
            action text NOT NULL,
            target text NOT NULL,
            changes jsonb NOT NULL,
            outcome text NOT NULL
        );
        CREATE INDEX audit_action ON audit (action, id);
        CREATE INDEX audit_target ON audit (target, id);
    """),
    Migration(4, "teams, and each ledger row's team", """
        -- a team's limits apply on top of its keys'; its spend, reservations and counters are
        -- kept under the subject "team:<id>" in the tables above
        CREATE TABLE teams (
            id text PRIMARY KEY,
            description text NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL,
            rpm_limit bigint,
            tpm_limit bigint,
            max_parallel_requests bigint,
            monthly_budget_usd double precision,
            metadata jsonb NOT NULL DEFAULT '{}'
        );
        ALTER TABLE ledger ADD COLUMN team text NOT NULL DEFAULT '';
        CREATE INDEX ledger_at ON ledger (at);
    """),
    Migration(5, "rag_jobs (RAG ingest jobs' status)", """
        CREATE TABLE rag_jobs (
            id text PRIMARY KEY,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            data text NOT NULL
        );
        CREATE INDEX rag_jobs_created_at ON rag_jobs (created_at);
    """),
    Migration(6, "console_sessions (the web console's sessions, by the hash of their id)", """
        CREATE TABLE console_sessions (
            id_hash text PRIMARY KEY,
            created_at double precision NOT NULL,
            used_at double precision NOT NULL
        );
    """),
    Migration(7, "console_sessions.key_fp (a session is tied to the admin key that opened it)",
              """
        ALTER TABLE console_sessions ADD COLUMN key_fp text NOT NULL DEFAULT '';
    """),
)

_TRACKING = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""


def _applied(conn: Connection[TupleRow]) -> list[Applied]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute("SELECT version, name, applied_at FROM schema_migrations "
                        "ORDER BY version").fetchall()
    return [Applied(version, name, at) for version, name, at in rows]


def migrate(conn: Connection[TupleRow],
            migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """Apply the migrations not applied yet, in order, in one transaction under the advisory
    lock. Returns those it applied (empty: the schema was current). Blocking (a worker
    thread's); raises psycopg errors (the caller's edge translates them)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        conn.execute(_TRACKING)
        done = {a.version for a in _applied(conn)}
        applied = []
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in done:
                continue
            conn.execute(migration.sql)  # no parameters: several statements at once
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                         (migration.version, migration.name))
            applied.append(migration)
        return applied


def status(conn: Connection[TupleRow],
           migrations: Sequence[Migration] = MIGRATIONS) -> tuple[list[Applied], list[Migration]]:
    """The migrations applied (with when) and those pending. Blocking; raises psycopg
    errors."""
    applied = _applied(conn)
    done = {a.version for a in applied}
    return applied, [m for m in migrations if m.version not in done]
