"""The SQLite edge: keys, spend per (key, period) and the spend ledger, in one database file
under ``AILB_DATA_DIR``.

WAL mode with ``synchronous=NORMAL``: a committed transaction survives the process being killed
(SIGKILL), only an OS crash could lose the last ones. Writes are small and run on the event loop
thread (tens of microseconds); the ledger is written in batches by its own task. Migrations are
numbered in code and applied in order; ``PRAGMA user_version`` records the last one applied.
This is the only module that imports sqlite3.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ailb.errors import ConfigError
from ailb.keys.records import KeyRecord

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
)
_FIELDS: Final = ("id", "name", "secret_hash", "created_at", "owner", "team", "expires_at",
                  "active", "allowed_models", "rpm_limit", "tpm_limit", "max_parallel_requests",
                  "monthly_budget_usd", "metadata", "source", "rag_collections")


@dataclass(frozen=True, slots=True)
class LedgerRow:
    request_id: str
    at: datetime
    key_id: str
    model: str
    deployment: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    status: int
    latency_ms: float


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


class Store:
    """One SQLite connection, used from the Trio thread only."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.Error as exc:
            raise ConfigError("AILB_DATA_DIR", f"cannot open the key store {path}: {exc}") \
                from exc

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # statement by statement: executescript would commit on its own
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={number}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()

    # -- keys ---------------------------------------------------------------------------------
    def keys(self) -> list[KeyRecord]:
        return [_row_to_key(r) for r in self._db.execute("SELECT * FROM keys ORDER BY created_at")]

    def put_key(self, key: KeyRecord) -> None:
        """Insert or replace a key (all fields)."""
        values: list[Any] = [key.id, key.name, key.secret_hash, _time(key.created_at), key.owner,
                             key.team, _time(key.expires_at), int(key.active),
                             json.dumps(list(key.allowed_models)), key.rpm_limit, key.tpm_limit,
                             key.max_parallel_requests, key.monthly_budget_usd,
                             json.dumps(dict(key.metadata)), key.source,
                             json.dumps(list(key.rag_collections))]
        placeholders = ", ".join("?" for _ in _FIELDS)
        self._db.execute(f"INSERT OR REPLACE INTO keys ({', '.join(_FIELDS)}) "
                         f"VALUES ({placeholders})", values)

    # -- spend --------------------------------------------------------------------------------
    def spend(self, period: str) -> dict[str, float]:
        rows = self._db.execute("SELECT key_id, usd FROM spend WHERE period = ?", (period,))
        return {row["key_id"]: row["usd"] for row in rows}

    def add_spend(self, key_id: str, period: str, usd: float) -> None:
        """Add (or, negative, take back) spend, in its own committed transaction."""
        self._db.execute(
            "INSERT INTO spend (key_id, period, usd) VALUES (?, ?, ?) "
            "ON CONFLICT (key_id, period) DO UPDATE SET usd = usd + excluded.usd",
            (key_id, period, usd))

    # -- ledger -------------------------------------------------------------------------------
    def append_ledger(self, rows: Iterable[LedgerRow]) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.request_id, _time(r.at), r.key_id, r.model, r.deployment, r.prompt_tokens,
                  r.completion_tokens, r.cached_tokens, r.cost_usd, r.status, r.latency_ms)
                 for r in rows])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def usage(self, key_id: str, since: datetime) -> list[dict[str, Any]]:
        """Requests, tokens and cost per (day, model) since ``since``."""
        rows = self._db.execute(
            "SELECT substr(at, 1, 10) AS day, model, COUNT(*) AS requests, "
            "SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens, "
            "SUM(cost_usd) AS cost_usd FROM ledger WHERE key_id = ? AND at >= ? "
            "GROUP BY day, model ORDER BY day, model", (key_id, _time(since)))
        return [dict(row) for row in rows]

    def ledger_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0])
