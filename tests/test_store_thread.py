"""The store's own thread (ailb/stores/thread.py) and the embedded store's group commit
(sqlite_queries.in_transactions): calls in order, batched calls in one go, a cancelled caller
that still hears of its call only once it happened, and budgets exact in a group commit."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import outcome
import pytest
import trio
import trio.testing

from ailb.accounting.store import LedgerRow, Settlement
from ailb.errors import StoreUnavailable
from ailb.keys.store import MIGRATIONS, SqliteStore
from ailb.stores import sqlite_queries as q
from ailb.stores.thread import StoreThread


def _row(request_id: str, cost: float) -> LedgerRow:
    return LedgerRow(request_id, datetime.now(UTC), "k", "m", "d", 1, 1, 0, cost, 200, 1.0)


async def test_calls_run_in_order_and_queued_batches_go_together() -> None:
    gate = threading.Event()
    seen: list[list[int]] = []

    def batch(conn: list[int], works: Sequence[Callable[[list[int]], Any]]
              ) -> list[outcome.Outcome[Any]]:
        seen.append([w(conn) for w in works])
        return [outcome.Value(v) for v in seen[-1]]

    conn: list[int] = []
    worker: StoreThread[list[int]] = StoreThread(conn)
    results: dict[int, int] = {}

    def hold(c: list[int]) -> int:  # keeps the thread busy while the others queue up
        gate.wait(5)
        c.append(-1)
        return -1

    def item(i: int) -> Callable[[list[int]], int]:
        def work(c: list[int]) -> int:
            c.append(i)
            return i
        return work

    async def one(i: int) -> None:
        results[i] = await worker.call(item(i), batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.call, hold)
        await trio.sleep(0.05)
        for i in range(10):
            nursery.start_soon(one, i)
            await trio.sleep(0.005)  # in order
        await trio.sleep(0.05)
        gate.set()
    await worker.close()
    assert conn == [-1, *range(10)]
    assert seen == [list(range(10))]  # one batch: all were queued behind the busy thread
    assert results == {i: i for i in range(10)}


async def test_a_cancelled_caller_hears_only_once_its_call_happened() -> None:
    gate = threading.Event()
    done: list[str] = []

    def slow(conn: None) -> str:
        gate.wait(5)
        done.append("written")
        return "written"

    worker: StoreThread[None] = StoreThread(None)

    async def release_later() -> None:
        await trio.sleep(0.2)
        gate.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(release_later)
        with trio.move_on_after(0.05):
            assert await worker.call(slow) == "written"
        assert done == ["written"]  # not abandoned: it happened before the caller heard
    await worker.close()


async def test_calls_after_close_fail_and_queued_ones_finish(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "a.db")
    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(store.reserve, "k", "2026-12", 1.0, None)
        await trio.testing.wait_all_tasks_blocked()  # all twenty queued
        await store.aclose()
    with pytest.raises(StoreUnavailable):
        await store.read("k", "2026-12")
    store = await SqliteStore.open(tmp_path / "a.db")
    assert await store.read("k", "2026-12") == 20.0
    await store.aclose()


async def test_group_committed_reservations_hold_the_budget_exactly(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "a.db")
    admitted: list[str] = []

    async def one() -> None:
        got = await store.reserve("k", "2026-12", 0.3, 3.0)
        if got is not None:
            admitted.append(got.id)

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(one)
    assert len(admitted) == 10
    assert await store.read("k", "2026-12") == pytest.approx(3.0)
    async with trio.open_nursery() as nursery:  # settlements batched as well
        for i, rid in enumerate(admitted):
            nursery.start_soon(store.settle, [Settlement(rid, 0.1)], [_row(f"r{i}", 0.1)])
    assert await store.read("k", "2026-12") == pytest.approx(1.0)
    assert (await store.usage("k", datetime(2000, 1, 1, tzinfo=UTC)))[0]["requests"] == 10
    await store.aclose()


def test_one_failing_call_in_a_group_fails_alone(tmp_path: Path) -> None:
    db = q.connect(tmp_path / "a.db")

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    def reserve(reservation_id: str) -> Any:
        return lambda conn: q.reserve(conn, "k", "2026-12", 1.0, None, reservation_id)

    results = q.in_transactions(db, [reserve("a"), broken, reserve("b")])
    assert [type(r) for r in results] == [outcome.Value, outcome.Error, outcome.Value]
    assert q.read(db, "k", "2026-12") == 2.0  # the two good ones committed, once each
    assert db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 2
    db.close()


async def test_reservation_ids_differ_between_processes_on_one_file(tmp_path: Path) -> None:
    """Each store that opens the file (each worker process) numbers its reservations under a
    prefix of its own: interleaved, every one is recorded and settles its own."""
    stores = [await SqliteStore.open(tmp_path / "a.db") for _ in range(2)]
    ids = [got.id for _ in range(5) for store in stores
           if (got := await store.reserve("k", "2026-12", 1.0, None)) is not None]
    assert len(set(ids)) == 10
    for store, rid in zip(stores * 5, ids, strict=True):
        await store.settle([Settlement(rid, 0.25)], [])
    assert await stores[0].read("k", "2026-12") == pytest.approx(2.5)
    for store in stores:
        await store.aclose()


async def test_reservations_open_before_the_upgrade_to_one_b_tree_still_settle(
        tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:10], start=1):  # a database of version 10
        for statement in filter(str.strip, script.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version={number}")
    db.execute("INSERT INTO spend VALUES ('k', '2026-12', 2.0)")
    db.execute("INSERT INTO reservations VALUES ('old', 'k', '2026-12', 2.0)")
    db.close()
    store = await SqliteStore.open(path)
    await store.settle([Settlement("old", 0.5)], [])
    assert await store.read("k", "2026-12") == pytest.approx(0.5)
    await store.aclose()
    db = sqlite3.connect(path)
    # the id is the table's own key: no separate index to write with every reservation
    assert "WITHOUT ROWID" in db.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'reservations'").fetchone()[0]
    db.close()
