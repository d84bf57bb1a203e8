"""The acknowledged ledger's direct writes (``Ledger(direct=store)``, the embedded store): a
request's row and settlement are committed by the time ``record`` returns, many requests' in
one group commit (the store's thread), and a write the store refuses is retried by the writer
task without losing the credit bookkeeping (the spend never drops below what was charged). A
store slower than ``ack_s`` (another process holding the write lock) does not hold the answer
longer: the write goes on, and is retried by the writer if it fails in the end."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from ailb.accounting.ledger import Entry, Ledger
from ailb.accounting.store import LedgerRow, Settlement
from ailb.errors import StoreUnavailable
from ailb.keys.store import Late, SqliteStore

PERIOD = "2026-12"
SINCE = datetime(2000, 1, 1, tzinfo=UTC)


def _entry(request_id: str, reservation_id: str, reserved: float, cost: float) -> Entry:
    row = LedgerRow(request_id, datetime.now(UTC), "k", "m", "d", 1, 1, 0, cost, 200, 1.0)
    return Entry(row, Settlement(reservation_id, cost), PERIOD, reserved - cost)


class Flaky(SqliteStore):
    """The embedded store, refusing its first ``fail`` settlements."""

    fail = 0

    async def settle(self, settlements: Sequence[Settlement], rows: Sequence[LedgerRow],
                     late: Late | None = None) -> None:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("down for a moment")
        await super().settle(settlements, rows, late)


async def _reserve(store: SqliteStore, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        reserved = await store.reserve("k", PERIOD, 1.0, None)
        assert reserved is not None
        ids.append(reserved.id)
    return ids


async def test_a_direct_row_is_committed_when_record_returns(tmp_path: Path) -> None:
    store = await Flaky.open(tmp_path / "a.db")
    ledger = Ledger(store, flush_s=3600, ack=True, direct=store)  # the writer would wait an hour
    ids = await _reserve(store, 50)
    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run)

        async def one(i: int) -> None:
            await ledger.record(_entry(f"r{i}", ids[i], 1.0, 0.25))
            # committed before record returned (the acknowledged row, SIGKILL-safe)
            assert await store.read("k", PERIOD) <= 50.0 - 0.75 + 1e-9

        async with trio.open_nursery() as requests:
            for i in range(50):
                requests.start_soon(one, i)
        assert (await store.usage("k", SINCE))[0]["requests"] == 50
        assert await store.read("k", PERIOD) == pytest.approx(50 * 0.25)
        assert ledger.credit("k", PERIOD) == 0.0
        await ledger.close()
    await store.aclose()


async def test_a_refused_direct_row_is_retried_by_the_writer(tmp_path: Path) -> None:
    store = await Flaky.open(tmp_path / "a.db")
    store.fail = 2  # the direct write and the writer's first try
    ledger = Ledger(store, flush_s=0.01, retry_s=0.01, ack=True, direct=store)
    [rid] = await _reserve(store, 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run)
        await ledger.record(_entry("r1", rid, 1.0, 0.25))
        # not written yet: the spend stays at the worst case, and the gate counts the credit
        assert await store.read("k", PERIOD) == 1.0
        assert ledger.credit("k", PERIOD) == pytest.approx(0.75)
        with trio.fail_after(5):
            while ledger.credit("k", PERIOD):
                await trio.sleep(0.01)
        assert await store.read("k", PERIOD) == pytest.approx(0.25)
        assert (await store.usage("k", SINCE))[0]["requests"] == 1
        await ledger.close()
    await store.aclose()


async def test_after_close_rows_are_written_at_once(tmp_path: Path) -> None:
    store = await Flaky.open(tmp_path / "a.db")
    ledger = Ledger(store, ack=True, direct=store)
    [rid] = await _reserve(store, 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run)
        await ledger.close()
    await ledger.record(_entry("r1", rid, 1.0, 0.5))
    assert await store.read("k", PERIOD) == pytest.approx(0.5)
    await store.aclose()


async def _wait_written(store: SqliteStore, ledger: Ledger) -> None:
    with trio.fail_after(30):  # a hang guard only
        while not await store.usage("k", SINCE) or ledger.credit("k", PERIOD):
            await trio.sleep(0.01)


async def test_a_locked_store_does_not_hold_the_answer_past_ack_s(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "a.db")
    ledger = Ledger(store, flush_s=3600, ack=True, ack_s=0.05, direct=store)
    [rid] = await _reserve(store, 1)
    other = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker process holds the write lock
    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run)
        # the write waits for the lock (up to SQLite's busy timeout, 5 s); the answer does
        # not: ack_s is 0.05 (a loose bound, the hang guard's; before, record took the 5 s)
        with trio.fail_after(2.5):
            await ledger.record(_entry("r1", rid, 1.0, 0.25))
        other.execute("ROLLBACK")  # the lock is free: the write under way commits
        await _wait_written(store, ledger)
        assert await store.read("k", PERIOD) == pytest.approx(0.25)
        assert (await store.usage("k", SINCE))[0]["requests"] == 1
        await ledger.close()
    other.close()
    await store.aclose()


async def test_a_late_write_that_fails_is_retried_by_the_writer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = await SqliteStore.open(tmp_path / "a.db")
    # the store gives up on the lock sooner than its 5 s (a test seam: its own connection)
    await store._run(lambda db: db.execute("PRAGMA busy_timeout=100"))
    ledger = Ledger(store, flush_s=3600, retry_s=0.01, ack=True, ack_s=0.01, direct=store)
    [rid] = await _reserve(store, 1)
    other = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    caplog.set_level(logging.ERROR, "ailb.ledger")
    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run)
        await ledger.record(_entry("r1", rid, 1.0, 0.25))  # gone on before the write failed
        with trio.fail_after(30):  # the late failure reached the writer, which retries it
            while not any("retrying" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.01)
        # meanwhile the spend stays at the worst case reserved (read under the lock: WAL)
        assert other.execute("SELECT usd FROM spend").fetchone()[0] == 1.0
        other.execute("ROLLBACK")
        await _wait_written(store, ledger)
        assert await store.read("k", PERIOD) == pytest.approx(0.25)
        assert (await store.usage("k", SINCE))[0]["requests"] == 1
        await ledger.close()
    other.close()
    await store.aclose()

