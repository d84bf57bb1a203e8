"""The store's own thread (ailb/stores/thread.py) and the embedded store's group commit
(sqlite_transactions.in_transactions): calls in order, batched calls in one go, a cancelled
caller that still hears of its call only once it happened, budgets exact in a group commit; a
locked database fails a group at once (not once per call), a failed COMMIT leaves no
transaction open, and a failing loop answers every caller instead of leaving them waiting."""

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
from ailb.keys.records import TeamRecord
from ailb.keys.store import MIGRATIONS, SqliteStore
from ailb.stores import sqlite_queries as q
from ailb.stores.sqlite_transactions import in_transactions
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

    results = in_transactions(db, [reserve("a"), broken, reserve("b")])
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


def _reserve(reservation_id: str) -> Callable[[sqlite3.Connection], Any]:
    return lambda conn: q.reserve(conn, "k", "2026-12", 1.0, None, reservation_id)


def _begins(db: sqlite3.Connection) -> list[str]:
    """Every BEGIN the connection starts (each one that meets a lock waits the busy timeout)."""
    seen: list[str] = []
    db.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("BEGIN") else None)
    return seen


async def test_a_locked_database_fails_a_queued_group_at_once(tmp_path: Path) -> None:
    """Another process holds the write lock: the group's BEGIN waits the busy timeout once, and
    every call in it fails with that, each its own exception (not each again alone: N busy
    timeouts, with every call queued behind them waiting)."""
    db = q.connect(tmp_path / "a.db")
    db.execute("PRAGMA busy_timeout=50")
    begins = _begins(db)
    other = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker process, writing
    worker: StoreThread[sqlite3.Connection] = StoreThread(db)
    gate = threading.Event()
    errors: list[BaseException] = []

    async def one(i: int) -> None:
        try:
            await worker.call(_reserve(f"r{i}"), in_transactions)
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    with trio.fail_after(30):  # a hang guard only
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.call, lambda _: gate.wait(5))  # the others queue behind
            await trio.testing.wait_all_tasks_blocked()
            for i in range(8):
                nursery.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert len(errors) == 8 and all("locked" in str(e) for e in errors)
    assert len({id(e) for e in errors}) == 8  # each caller its own (tracebacks not chained)
    assert begins == ["BEGIN IMMEDIATE"]  # one wait for the lock, not 1 + 8
    other.execute("ROLLBACK")
    await worker.call(_reserve("after"), in_transactions)  # the lock gone, it writes
    await worker.close(last=lambda conn: conn.close())
    other.close()


def _held_by_a_reader(tmp_path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """The store's connection in rollback-journal mode, and a reader holding a shared lock:
    a write's COMMIT (which needs the exclusive lock) fails with SQLITE_BUSY, and SQLite
    leaves that transaction open."""
    db = q.connect(tmp_path / "a.db")
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA busy_timeout=20")
    reader = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM spend").fetchall()
    return db, reader


def test_a_failed_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    db, reader = _held_by_a_reader(tmp_path)
    team = TeamRecord("t", datetime.now(UTC))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        q.put_team(db, team)  # its COMMIT is refused
    assert not db.in_transaction  # rolled back: the next BEGIN IMMEDIATE is not refused
    begins = _begins(db)
    results = in_transactions(db, [_reserve("a"), _reserve("b")])  # a group: COMMIT refused
    assert [type(r) for r in results] == [outcome.Error, outcome.Error]
    assert begins == ["BEGIN IMMEDIATE"]  # failed as a whole, not again one by one
    assert not db.in_transaction
    reader.execute("COMMIT")
    q.put_team(db, team)
    assert [r.unwrap().id for r in in_transactions(db, [_reserve("a"), _reserve("b")])] == \
        ["a", "b"]
    assert [t.id for t in q.teams(db)] == ["t"]
    reader.close()
    db.close()


class _Failing(StoreThread[None]):
    """A loop that fails outside any call's own error (a bug in the thread)."""

    def _run_batch(self, batch: Any, jobs: list[Any]) -> None:
        raise RuntimeError("the loop broke")


async def test_a_failing_loop_answers_every_caller(tmp_path: Path) -> None:
    worker = _Failing(None)
    gate = threading.Event()
    heard: list[str] = []

    def batch(conn: None, works: Sequence[Callable[[None], Any]]) -> list[outcome.Outcome[Any]]:
        return [outcome.Value(None) for _ in works]

    async def one(with_batch: Any = batch) -> None:
        with pytest.raises(StoreUnavailable, match="the loop broke") as caught:
            await worker.call(lambda _: None, with_batch)
        heard.append(caught.value.message)

    with trio.fail_after(30):  # a hang guard only: the callers waited forever before
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.call, lambda _: gate.wait(5))
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):  # in the batch that fails
                nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(one, None)  # not batched: queued behind
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert len(heard) == 4
    with pytest.raises(StoreUnavailable):  # refused at once from now on
        await worker.call(lambda _: None)
    closed: list[None] = []
    with trio.fail_after(30):
        await worker.close(last=closed.append)  # the connection still closed, the thread joined
    assert closed == [None]


async def test_a_batch_giving_too_few_outcomes_fails_its_callers() -> None:
    worker: StoreThread[None] = StoreThread(None)

    def short(conn: None, works: Sequence[Callable[[None], Any]]
              ) -> list[outcome.Outcome[Any]]:
        return [outcome.Value(None)]

    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await worker.call(lambda _: None, short)
        except RuntimeError as exc:
            errors.append(exc)

    gate = threading.Event()
    with trio.fail_after(30):  # a hang guard only
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.call, lambda _: gate.wait(5))
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        assert len(errors) == 3 and len({id(e) for e in errors}) == 3
        assert await worker.call(lambda _: "still serving") == "still serving"
        await worker.close()


async def test_a_caller_with_late_stops_waiting_and_late_hears_the_outcome() -> None:
    worker: StoreThread[None] = StoreThread(None)
    gate = threading.Event()
    heard = trio.Event()
    late: list[Any] = []

    def on_late(result: outcome.Outcome[Any]) -> None:
        late.append(result.unwrap())
        heard.set()

    with trio.move_on_after(0.01) as waited:
        await worker.call(lambda _: gate.wait(5) and "written", late=on_late)
    assert waited.cancelled_caught and not late  # gave up while the call was under way
    gate.set()
    with trio.fail_after(30):
        await heard.wait()
    assert late == ["written"]
    await worker.close()
