"""``ailb db migrate|status``: the PostgreSQL schema of ``DATABASE_URL``.

Gateways migrate the database themselves when they start (under an advisory lock, so several
may start at once); ``migrate`` lets an operator do it ahead of a rollout and see what was
applied. Exit codes: 0 done, 2 when ``DATABASE_URL`` is unset, unreachable or cannot be
migrated (and for ``status``, 0 whether or not migrations are pending: it reports them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from ailb.config.schema import Settings
from ailb.errors import ConfigError, StoreUnavailable


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ailb db",
                                     description="The PostgreSQL schema (DATABASE_URL).")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("migrate", help="apply the migrations not applied yet")
    sub.add_parser("status", help="list the migrations applied and those pending")
    return parser


async def _action(url: str, action: str) -> list[str]:
    """Raises ConfigError (unreachable) or StoreUnavailable."""
    from ailb.stores.postgres import PostgresStore, where  # psycopg only for this command

    store = await PostgresStore.open(url, migrate=False)
    try:
        if action == "migrate":
            applied = await store.migrate()
            lines = [f"applied {m.version:04d} {m.name}" for m in applied]
            return [*lines, f"database at {where(url)} is up to date"
                    + ("" if applied else " (nothing to apply)")]
        done, pending = await store.migration_status()
        return [*(f"applied {a.version:04d} {a.name} at {a.applied_at.isoformat()}"
                  for a in done),
                *(f"pending {m.version:04d} {m.name}" for m in pending),
                f"database at {where(url)}: {len(done)} applied, {len(pending)} pending"]
    finally:
        await store.aclose()


def run_db(settings: Settings, argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if not settings.shared.database_url:
        print("ailb db: DATABASE_URL is not set (keys and spend are in the embedded SQLite "
              "store, which migrates itself)", file=sys.stderr)
        return 2
    try:
        lines = trio.run(_action, settings.shared.database_url.value, args.action)
    except ConfigError as exc:
        print(f"ailb db: {exc.problem}", file=sys.stderr)
        return 2
    except ConnectionError as exc:  # the database does not answer: try again later
        print(f"ailb db: {exc}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"ailb db: {exc.message}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
