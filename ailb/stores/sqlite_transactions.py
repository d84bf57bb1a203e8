"""The embedded store's transactions, on its thread (:mod:`ailb.stores.sqlite_queries`):
``transaction`` for one call's, ``in_transactions`` for the group commit of the reservations and
settlements queued together (:class:`ailb.stores.thread.StoreThread`'s ``batch``).

A transaction that fails, at any point (its COMMIT included: SQLITE_BUSY there leaves it open),
is rolled back, so the connection's next BEGIN never finds one still open."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import outcome

from ailb.stores.thread import own_errors


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")  # inside: a COMMIT that fails (busy) leaves the transaction open
    except BaseException:
        _rollback(db)
        raise


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:  # SQLite may have rolled back already (a full disk)
        db.execute("ROLLBACK")


def in_transactions(db: sqlite3.Connection,
                    works: Sequence[Callable[[sqlite3.Connection], Any]]
                    ) -> list[outcome.Outcome[Any]]:
    """Run ``works`` (``reserve`` and ``settle`` calls) in one transaction: one commit for all
    (a group commit), each seeing the ones before it, so every budget check stays exact. One
    outcome per work, in order; none is told before its commit.

    If the transaction itself fails (its BEGIN or COMMIT, or the database busy or locked:
    another process holds the write lock), every call fails with that error, each its own
    copy: run alone, each would wait the busy timeout again, and every call queued behind
    them with it. If one call raises, all are rolled back and each runs again in a
    transaction of its own, so that its failure is its own (a transaction failing then fails
    the rest at once)."""
    if len(works) > 1:
        try:
            return [outcome.Value(value) for value in _together(db, works)]
        except _Whole as whole:
            return own_errors(whole.error, len(works))
        except Exception:  # rolled back: each alone below
            pass
    results: list[outcome.Outcome[Any]] = []
    for done, work in enumerate(works):
        try:
            [value] = _together(db, [work])
        except _Whole as whole:
            return results + own_errors(whole.error, len(works) - done)
        except BaseException as exc:
            results.append(outcome.Error(exc))
            continue
        results.append(outcome.Value(value))
    return results


class _Whole(Exception):
    """A transaction failed as a whole, not one call in it: ``error`` is why."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _together(db: sqlite3.Connection, works: Sequence[Callable[[sqlite3.Connection], Any]]
              ) -> list[Any]:
    """``works`` in one transaction, their values. Raises _Whole when the transaction
    failed (BEGIN, COMMIT, busy or locked), else a call's own error (rolled back)."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise _Whole(exc) from None
    try:
        values = [work(db) for work in works]
    except BaseException as exc:
        _rollback(db)
        if _locked(exc):
            raise _Whole(exc) from None
        raise
    try:
        db.execute("COMMIT")
    except BaseException as exc:
        _rollback(db)
        raise _Whole(exc) from None
    return values


def _locked(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (and their extended codes)."""
    return isinstance(exc, sqlite3.OperationalError) and \
        exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
