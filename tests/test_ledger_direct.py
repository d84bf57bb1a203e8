"""The acknowledged ledger's direct writes (``Ledger(direct=True)``, the embedded store): a
request's row and settlement are committed by the time ``record`` returns, many requests' in
one group commit (the store's thread), and a write the store refuses is retried by the writer
task without losing the credit bookkeeping (the spend never drops below what was charged)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from ailb.accounting.ledger import Entry, Ledger
from ailb.accounting.store import LedgerRow, Settlement
from ailb.errors import StoreUnavailable
from ailb.keys.store import SqliteStore

PERIOD = "2026-12"
SINCE = datetime(2000, 1, 1, tzinfo=UTC)


def _entry(request_id: str, reservation_id: str, reserved: float, cost: float) -> Entry:
    row = LedgerRow(request_id, datetime.now(UTC), "k", "m", "d", 1, 1, 0, cost, 200, 1.0)
    return Entry(row, Settlement(reservation_id, cost), PERIOD, reserved - cost)


class Flaky(SqliteStore):
    """The embedded store, refusing its first ``fail`` settlements."""

    fail = 0

    async def settle(self, settlements: Sequence[Settlement],
                     rows: Sequence[LedgerRow]) -> None:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("down for a moment")
        await super().settle(settlements, rows)


async def _reserve(store: SqliteStore, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        reserved = await store.reserve("k", PERIOD, 1.0, None)
        assert reserved is not None
        ids.append(reserved.id)
    return ids


async def test_a_direct_row_is_committed_when_record_returns(tmp_path: Path) -> None:
    store = await Flaky.open(tmp_path / "a.db")
    ledger = Ledger(store, flush_s=3600, ack=True, direct=True)  # the writer would wait an hour
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
    ledger = Ledger(store, flush_s=0.01, retry_s=0.01, ack=True, direct=True)
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
    ledger = Ledger(store, ack=True, direct=True)
    [rid] = await _reserve(store, 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run)
        await ledger.close()
    await ledger.record(_entry("r1", rid, 1.0, 0.5))
    assert await store.read("k", PERIOD) == pytest.approx(0.5)
    await store.aclose()
