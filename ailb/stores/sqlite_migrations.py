"""The embedded store's schema: SQLite migrations, numbered by their place in
:data:`MIGRATIONS` and applied in order by :func:`ailb.stores.sqlite_queries.connect`
(``PRAGMA user_version`` records the last one applied). Append; never edit one that shipped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

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
    # 11: reservations in one b-tree (WITHOUT ROWID: the id is the table's key, no separate
    # index), so each reservation and its settlement write one page fewer per commit
    """
    CREATE TABLE reservations_by_id (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        period TEXT NOT NULL,
        usd REAL NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO reservations_by_id (id, key_id, period, usd)
        SELECT id, key_id, period, usd FROM reservations;
    DROP TABLE reservations;
    ALTER TABLE reservations_by_id RENAME TO reservations;
    """,
)
