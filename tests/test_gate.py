"""The gate over the store seam: with an in-memory store of our own (it implements the Store
protocol, and can be told to fail) and with the real SQLite store on a tmp_path. Then the
ledger's backpressure and retries."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from ailb.accounting.gate import Gate, Ticket
from ailb.accounting.ledger import Entry, Ledger
from ailb.accounting.store import LedgerRow, Reserved, Settlement, Store
from ailb.errors import BudgetExceeded, RateLimited, StoreUnavailable
from ailb.keys.records import KeyRecord
from ailb.keys.store import SqliteStore
from ailb.model import Usage
from ailb.pricing import Price, PriceTable

WHEN = datetime(2026, 11, 27, 12, tzinfo=UTC)
TARGETS = [("m", "openai")]  # at $0.0001 a token


class MemoryStore:
    """The Store protocol in memory; the methods named in ``down`` raise StoreUnavailable."""

    def __init__(self) -> None:
        self.spend: dict[tuple[str, str], float] = {}
        self.reservations: dict[str, tuple[str, str, float]] = {}
        self.ledger: list[LedgerRow] = []
        self.key_records: dict[str, KeyRecord] = {}
        self.down: set[str] = set()

    async def _call(self, name: str) -> None:
        await trio.lowlevel.checkpoint()  # a store call lets other tasks run
        if name in self.down or "all" in self.down:
            raise StoreUnavailable("down", code="key_store_unavailable")

    async def reserve(self, key_id: str, period: str, usd: float,
                      budget_usd: float | None) -> Reserved | None:
        await self._call("reserve")
        spent = self.spend.get((key_id, period), 0.0)
        if budget_usd is not None and spent + usd > budget_usd:
            return None
        self.spend[key_id, period] = spent + usd
        reservation_id = uuid.uuid4().hex
        self.reservations[reservation_id] = (key_id, period, usd)
        return Reserved(reservation_id, spent + usd)

    async def settle(self, settlements: Sequence[Settlement],
                     rows: Sequence[LedgerRow]) -> None:
        await self._call("settle")
        for settlement in settlements:
            found = self.reservations.pop(settlement.reservation_id, None)
            if found is not None:
                key_id, period, reserved = found
                self.spend[key_id, period] += settlement.usd - reserved
        self.ledger.extend(rows)

    async def read(self, key_id: str, period: str) -> float:
        await self._call("read")
        return self.spend.get((key_id, period), 0.0)

    async def usage(self, key_id: str, since: datetime) -> list[dict[str, Any]]:
        await self._call("usage")
        return [{"requests": sum(r.key_id == key_id and r.at >= since for r in self.ledger)}]

    async def keys(self) -> list[KeyRecord]:
        await self._call("keys")
        return list(self.key_records.values())

    async def put_key(self, key: KeyRecord) -> None:
        await self._call("put_key")
        self.key_records[key.id] = key


def _key(**limits: Any) -> KeyRecord:
    return KeyRecord(id="k1", name="", secret_hash="h", created_at=WHEN, **limits)


def _gate(store: Store, clock: list[float]) -> tuple[Gate, Ledger]:
    ledger = Ledger(store, flush_s=0.01, retry_s=0.01)
    prices = PriceTable({"m": Price(input_per_mtok=100, output_per_mtok=100)})
    gate = Gate(store, ledger, prices, "monthly", 1000, lambda: WHEN, lambda: clock[0])
    return gate, ledger


async def _settle(gate: Gate, ticket: Ticket, usage: Usage | None, status: int = 200) -> float:
    return await gate.settle(ticket, usage, 0, ("m", "openai", "up"), "req", status, 0.1)


async def test_admission_writes_ahead_and_settles_the_actual_cost() -> None:
    store, clock = MemoryStore(), [0.0]
    gate, ledger = _gate(store, clock)
    key = _key(monthly_budget_usd=1.0, tpm_limit=10_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.run)
        ticket = await gate.admit(key, "m", TARGETS, 100, 900)
        # 1000 tokens at $0.10 a token: the worst case is in the store before the call
        assert store.spend["k1", "2026-11"] == pytest.approx(0.1)
        assert ticket.headers["x-ratelimit-remaining-tokens"] == "9000"
        assert await _settle(gate, ticket, Usage(100, 50)) == pytest.approx(0.015)
        assert await _settle(gate, ticket, Usage(100, 50)) == 0.0  # once only
        assert ticket.headers["x-ailb-key-spend"] == "0.015000"
        assert await gate.spent("k1", "2026-11") == pytest.approx(0.015)  # in memory at once
        await ledger.close()  # the store: with the ledger row, in the writer's batch
    assert store.spend["k1", "2026-11"] == pytest.approx(0.015) and not store.reservations
    assert [(r.request_id, r.completion_tokens) for r in store.ledger] == [("req", 50)]


async def test_a_failed_reservation_is_undone_and_refused_with_503() -> None:
    store, clock = MemoryStore(), [0.0]
    gate, _ = _gate(store, clock)
    key = _key(rpm_limit=1, max_parallel_requests=1, monthly_budget_usd=0.2)
    store.down = {"reserve"}
    with pytest.raises(StoreUnavailable):
        await gate.admit(key, "m", TARGETS, 1, 1)
    store.down = set()
    await gate.admit(key, "m", TARGETS, 1, 1)  # nothing was left taken: rpm, parallel, budget


async def test_a_failed_read_takes_nothing() -> None:
    store, clock = MemoryStore(), [0.0]
    gate, _ = _gate(store, clock)
    store.down = {"read"}
    with pytest.raises(StoreUnavailable):
        await gate.admit(_key(rpm_limit=1), "m", TARGETS, 1, 1)
    store.down = set()
    await gate.admit(_key(rpm_limit=1), "m", TARGETS, 1, 1)


async def test_the_stores_budget_check_refuses_and_undoes() -> None:
    store, clock = MemoryStore(), [0.0]
    gate, _ = _gate(store, clock)
    key = _key(monthly_budget_usd=0.25, max_parallel_requests=1)
    ticket = await gate.admit(key, "m", TARGETS, 500, 500)  # $0.10 at worst
    await _settle(gate, ticket, Usage(1, 1))
    # the store holds this gateway's $0.10 reservation (its settlement is still queued), and
    # another gateway spent $0.20 on the same key: $0.30 - $0.0998 to come back + $0.10 > $0.25
    store.spend["k1", "2026-11"] = 0.3
    with pytest.raises(BudgetExceeded) as refused:
        await gate.admit(key, "m", TARGETS, 500, 500)
    assert refused.value.headers["x-ailb-budget-remaining"] == "0.249800"  # as this one knows
    store.spend["k1", "2026-11"] = 0.0
    await gate.admit(key, "m", TARGETS, 500, 500)  # the parallel slot was given back


async def test_a_failed_settle_is_kept_and_retried_not_raised() -> None:
    store, clock = MemoryStore(), [0.0]
    gate, ledger = _gate(store, clock)
    ticket = await gate.admit(_key(monthly_budget_usd=1.0), "m", TARGETS, 10, 10)
    store.down = {"settle"}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.run)
        assert await _settle(gate, ticket, Usage(1, 1)) == pytest.approx(0.0002)
        with trio.move_on_after(0.1):  # the writer tries, and tries again
            await trio.sleep_forever()
        assert store.spend["k1", "2026-11"] == pytest.approx(0.002)  # the worst case stays
        assert store.ledger == []
        store.down = set()
        await ledger.close()  # the settlement and the row are written together, once
    assert store.spend["k1", "2026-11"] == pytest.approx(0.0002)
    assert len(store.ledger) == 1 and store.reservations == {}


async def test_settlements_on_their_way_to_the_store_count_in_its_budget_check() -> None:
    store, clock = MemoryStore(), [0.0]
    gate, ledger = _gate(store, clock)  # the writer is not running: settlements stay queued
    key = _key(monthly_budget_usd=1.0)
    for _ in range(5):  # $0.2 reserved each; each cost $0.0001 in the end
        await _settle(gate, await gate.admit(key, "m", TARGETS, 1000, 1000), Usage(1, 0))
    assert store.spend["k1", "2026-11"] == pytest.approx(1.0)  # the store: all reserved
    assert ledger.credit("k1", "2026-11") == pytest.approx(1.0 - 0.0005)
    # the key spent $0.0005: a sixth request fits, though the store has not heard yet
    ticket = await gate.admit(key, "m", TARGETS, 1000, 1000)
    assert ticket.reservation_id in store.reservations
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.run)
        await _settle(gate, ticket, Usage(1, 0))
        await ledger.close()
    assert store.spend["k1", "2026-11"] == pytest.approx(0.0006)
    assert ledger.credit("k1", "2026-11") == 0.0


async def test_limits_hold_with_100_in_flight() -> None:
    store, clock = MemoryStore(), [0.0]
    gate, _ = _gate(store, clock)
    key = _key(monthly_budget_usd=1.0, rpm_limit=60)
    admitted: list[Ticket] = []
    refused: list[Exception] = []

    async def one() -> None:
        try:
            admitted.append(await gate.admit(key, "m", TARGETS, 1000, 1000))  # $0.2 at worst
        except (BudgetExceeded, RateLimited) as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(one)
    assert len(admitted) == 5 and len(refused) == 95
    assert store.spend["k1", "2026-11"] == pytest.approx(1.0)


async def test_with_sqlite_on_disk(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "ailb.db")
    clock = [0.0]
    gate, ledger = _gate(store, clock)
    key = _key(monthly_budget_usd=1.0, max_parallel_requests=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.run)
        tickets = [await gate.admit(key, "m", TARGETS, 1000, 1000) for _ in range(5)]
        with pytest.raises(BudgetExceeded):
            await gate.admit(key, "m", TARGETS, 1000, 1000)
        assert await store.read("k1", "2026-11") == pytest.approx(1.0)  # written ahead
        for ticket in tickets[:4]:
            await _settle(gate, ticket, Usage(1, 0))
        await ledger.close()  # the settlements are written with the rows
        await store.settle([Settlement(tickets[0].reservation_id, 99.0)], [])  # retried: no effect
        assert await store.read("k1", "2026-11") == pytest.approx(0.2 + 4 * 0.0001)
    assert (await store.usage("k1", WHEN.replace(day=1)))[0]["requests"] == 4
    await store.put_key(key)
    await store.aclose()
    # reopened (as after a SIGKILL mid-call): the open reservation is still charged in full
    store = await SqliteStore.open(tmp_path / "ailb.db")
    assert await store.read("k1", "2026-11") == pytest.approx(0.2004)
    assert [k.id for k in await store.keys()] == ["k1"]
    await store.aclose()


async def test_sqlite_runs_off_the_trio_thread(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "ailb.db")
    try:
        worker = await store._run(lambda db: threading.get_ident())
        assert worker != threading.get_ident()
    finally:
        await store.aclose()


async def test_sqlite_errors_become_store_unavailable(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "ailb.db")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store._run(lambda db: db.execute("SELECT * FROM nowhere"))
        assert caught.value.status == 503 and caught.value.code == "key_store_unavailable"
    finally:
        await store.aclose()


class SlowStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.calls: list[int] = []  # rows per settle call

    async def settle(self, settlements: Sequence[Settlement],
                     rows: Sequence[LedgerRow]) -> None:
        self.calls.append(len(rows))
        await self.gate.wait()
        await super().settle(settlements, rows)


def _row(n: int) -> LedgerRow:
    return LedgerRow(f"r{n}", WHEN, "k1", "m", "up", 1, 1, 0, 0.0, 200, 1.0)


async def test_a_full_ledger_pushes_back_instead_of_writing_inline() -> None:
    store = SlowStore()
    ledger = Ledger(store, flush_s=0.01, batch=2, capacity=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.run)
        for n in range(4):  # a batch of 2 is with the store (stuck); 2 more fill the channel
            await ledger.record(Entry(_row(n)))
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.1) as waited:
            await ledger.record(Entry(_row(4)))
        assert waited.cancelled_caught  # the caller waited; nothing was written on its task
        assert store.calls == [2]
        store.gate.set()
        await ledger.record(Entry(_row(4)))
        await ledger.close()
    assert [r.request_id for r in store.ledger] == [f"r{n}" for n in range(5)]


class SlowKeys:
    """The real SQLite store, with the latency of a database across a network on key writes."""

    def __init__(self, inner: SqliteStore, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    async def put_key(self, key: KeyRecord) -> None:
        await trio.sleep(self.delay_s)
        await self.inner.put_key(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("first", ["revoke", "rotate"])
async def test_an_overlapping_update_never_undoes_a_revoke_or_a_rotation(
        first: str, tmp_path: Path) -> None:
    from ailb.keys.records import secret_matches, split_key
    from ailb.keys.registry import KeyRegistry

    inner = await SqliteStore.open(tmp_path / "keys.db")
    try:
        registry = KeyRegistry(SlowKeys(inner, 0.05), lambda: datetime.now(UTC))  # type: ignore[arg-type]
        key, _ = await registry.create({"name": "k"})
        rotated: list[str] = []

        async def change() -> None:
            if first == "revoke":
                await registry.revoke(key.id)
            else:
                rotated.append((await registry.rotate(key.id))[1])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(change)
            await trio.sleep(0.01)  # the first change is being written
            nursery.start_soon(registry.update, key.id, {"rpm_limit": 10})
        stored = {k.id: k for k in await inner.keys()}[key.id]
        for record in (registry.require(key.id), stored):
            assert record.rpm_limit == 10
            if first == "revoke":
                assert not record.active
            else:
                parts = split_key(rotated[0])
                assert parts is not None and secret_matches(record, parts[1])
    finally:
        await inner.aclose()


async def test_a_ledger_queue_full_for_too_long_loses_the_row_not_the_request() -> None:
    store = SlowStore()  # the writer's first batch never finishes
    ledger = Ledger(store, flush_s=0.01, batch=1, capacity=1, queue_wait_s=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.run)
        await ledger.record(Entry(_row(0)))  # taken by the writer, stuck in the store
        await trio.testing.wait_all_tasks_blocked()
        await ledger.record(Entry(_row(1)))  # queued
        with trio.fail_after(5):
            await ledger.record(Entry(_row(2), Settlement("r", 0.0), "2026-11", 0.5))
        assert ledger.credit("k1", "2026-11") == 0.0  # lost: its key stays charged
        store.gate.set()
        await ledger.close()
    assert [r.request_id for r in store.ledger] == ["r0", "r1"]
