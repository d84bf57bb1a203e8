"""Which store holds keys, spend, the ledger and the shared counters: PostgreSQL when
``DATABASE_URL`` is set (gateways on several machines share it), else the embedded SQLite file
in the data dir (one machine: one process, or worker processes sharing the file)."""

from __future__ import annotations

from typing import Final, Protocol

from ailb.accounting.counters import SharedCounters
from ailb.accounting.store import Store
from ailb.config.schema import Settings
from ailb.console.sessions import SessionStore
from ailb.keys.store import SqliteStore
from ailb.rag.jobs import RagJobStore
from ailb.responses.state import ResponseStore

SQLITE_FILE: Final = "ailb.db"


class AccountingStore(Store, SharedCounters, ResponseStore, RagJobStore, SessionStore,
                      Protocol):
    """The store seams in one store, and its closing."""

    async def aclose(self) -> None:
        """Release the store's connections once the calls already made are done."""
        ...


def describe_store(settings: Settings) -> str:
    """Where the store is, for messages (never the database password)."""
    if settings.shared.database_url:
        from ailb.stores.postgres import where

        return f"PostgreSQL at {where(settings.shared.database_url.value)}"
    return f"SQLite at {settings.data_dir / SQLITE_FILE}"


async def open_store(settings: Settings) -> AccountingStore:
    """Open (and migrate) the store the settings name. The caller closes it with ``aclose``.
    Raises ConfigError when it cannot be opened (``DATABASE_URL`` or ``AILB_DATA_DIR``)."""
    if settings.shared.database_url:
        # imported only when used: psycopg and its pool take ~0.1 s to import
        from ailb.stores.postgres import PostgresStore

        return await PostgresStore.open(settings.shared.database_url.value)
    return await SqliteStore.open(settings.data_dir / SQLITE_FILE)
