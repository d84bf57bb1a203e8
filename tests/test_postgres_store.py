"""The store seam against real stores: one conformance suite run on the embedded SQLite store
and on PostgreSQL (a real server, tests/servers/postgres.py), then what only PostgreSQL has:
several pools (as several gateways), migrations, ``ailb db``, an outage and the recovery."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from ailb.accounting.counters import Taken
from ailb.accounting.reservations import KeyLimits, Refusal
from ailb.accounting.store import LedgerRow, Settlement
from ailb.audit.entry import new_entry
from ailb.errors import ConfigError, StoreUnavailable
from ailb.keys.records import KeyRecord, TeamRecord
from ailb.keys.store import SqliteStore
from ailb.rag.jobs import RETENTION_S, IngestJob, JobError, new_job_id
from ailb.stores.open import AccountingStore
from ailb.stores.pg_migrations import MIGRATIONS
from ailb.stores.postgres import PostgresStore
from tests.servers.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
WHEN = datetime(2026, 11, 27, 12, tzinfo=UTC)
Opener = Callable[[], Awaitable[AccountingStore]]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the store under test (each call: another store object on the same data)."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        return lambda: PostgresStore.open(url)
    return lambda: SqliteStore.open(tmp_path / "ailb.db")


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[AccountingStore]:
    opened = await opener()
    try:
        yield opened
    finally:
        await opened.aclose()


def _row(request_id: str, at: datetime = WHEN, model: str = "m", cost: float = 0.25,
         key_id: str = "k1") -> LedgerRow:
    return LedgerRow(request_id, at, key_id, model, "d1", 10, 5, 0, cost, 200, 12.5)


def _key(key_id: str = "k1", created: datetime = WHEN, **fields: object) -> KeyRecord:
    return replace(KeyRecord(key_id, f"name-{key_id}", "ab" * 32, created), **fields)


# -- conformance: both stores ---------------------------------------------------------------------
async def test_reserve_checks_the_budget_and_settle_charges_the_actual_cost(
        store: AccountingStore) -> None:
    first = await store.reserve("k1", "2026-11", 0.5, 1.0)
    assert first is not None and await store.read("k1", "2026-11") == 0.5
    assert await store.reserve("k1", "2026-11", 0.75, 1.0) is None  # would pass the budget
    assert await store.reserve("k1", "2026-11", 2.0, None) is not None  # no budget: taken
    assert await store.read("k1", "2026-11") == 2.5
    assert await store.read("k1", "2026-12") == 0.0 and await store.read("k2", "2026-11") == 0
    assert first.spent == 0.5
    await store.settle([Settlement(first.id, 0.125)], [_row("r1", cost=0.125)])
    assert await store.read("k1", "2026-11") == 2.125
    await store.settle([Settlement("unknown", 5.0)], [])  # nothing to settle: no change
    assert await store.read("k1", "2026-11") == 2.125


async def test_a_batch_settled_twice_charges_once(store: AccountingStore) -> None:
    ids = [await store.reserve("k1", "2026-11", 1.0, None) for _ in range(3)]
    batch = [Settlement(i.id, 0.25) for i in ids if i is not None]
    rows = [_row(f"r{n}") for n in range(3)]
    await store.settle(batch, rows)
    await store.settle(batch, rows)  # retried after a failure: settles nothing again
    assert await store.read("k1", "2026-11") == 0.75


async def test_usage_per_utc_day_and_model(store: AccountingStore) -> None:
    late = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    rows = [_row("a", late, "b-model"), _row("b", late + timedelta(hours=1), "b-model"),
            _row("c", late, "a-model"), _row("d", late, "B-model"),
            _row("e", WHEN - timedelta(days=30)), _row("f", late, key_id="other")]
    await store.settle([], rows)
    usage = await store.usage("k1", WHEN - timedelta(days=1))
    assert usage == [
        {"day": "2026-11-27", "model": "B-model", "requests": 1, "prompt_tokens": 10,
         "completion_tokens": 5, "cost_usd": 0.25},
        {"day": "2026-11-27", "model": "a-model", "requests": 1, "prompt_tokens": 10,
         "completion_tokens": 5, "cost_usd": 0.25},
        {"day": "2026-11-27", "model": "b-model", "requests": 1, "prompt_tokens": 10,
         "completion_tokens": 5, "cost_usd": 0.25},
        {"day": "2026-11-28", "model": "b-model", "requests": 1, "prompt_tokens": 10,
         "completion_tokens": 5, "cost_usd": 0.25}]


async def test_keys_round_trip_and_every_put_moves_the_version(store: AccountingStore) -> None:
    assert await store.keys() == [] and await store.keys_version() == 0
    full = _key("k2", WHEN, owner="ann", team="ops", expires_at=WHEN + timedelta(days=9),
                active=False, allowed_models=("gpt-4o*", "echo-1"), rpm_limit=10,
                tpm_limit=2**53, max_parallel_requests=3, monthly_budget_usd=12.5,
                metadata={"a": [1, {"b": None}], "z": "é"}, source="config",
                rag_collections=("docs-*",))
    older = _key("k1", WHEN - timedelta(days=1))
    await store.put_key(full)
    await store.put_key(older)
    assert await store.keys() == [older, full]  # oldest first, every field as it was put
    assert await store.keys_version() == 2
    await store.put_key(replace(full, active=True, allowed_models=(), metadata={}))
    assert (await store.keys())[1] == replace(full, active=True, allowed_models=(), metadata={})
    assert await store.keys_version() == 3
    await store.ping()


async def test_the_audit_log_pages_newest_first_and_filters(store: AccountingStore) -> None:
    assert await store.audit(10) == []
    ids = []
    for n, (action, target) in enumerate([("key.create", "k1"), ("key.update", "k1"),
                                          ("key.create", "k2"), ("routes.update", "fast")]):
        entry = new_entry(WHEN + timedelta(seconds=n), actor="admin-key", door="http",
                          address="10.0.0.1", action=action, target=target,
                          changes={"rpm_limit": {"from": None, "to": n}, "m": {"é": [1]}})
        ids.append(await store.add_audit(entry))
    assert ids == sorted(ids) and len(set(ids)) == 4
    newest = await store.audit(10)
    assert [e.id for e in newest] == ids[::-1]
    top = newest[0]
    assert (top.at, top.actor, top.door, top.address, top.action, top.target, top.outcome) == (
        WHEN + timedelta(seconds=3), "admin-key", "http", "10.0.0.1", "routes.update", "fast",
        "ok")
    assert top.changes == {"rpm_limit": {"from": None, "to": 3}, "m": {"é": [1]}}
    assert [e.id for e in await store.audit(2, before=ids[2])] == [ids[1], ids[0]]
    assert [e.id for e in await store.audit(10, action="key.create")] == [ids[2], ids[0]]
    assert [e.id for e in await store.audit(10, target="k1", before=ids[1])] == [ids[0]]
    assert [e.id for e in await store.audit(1, action="key.create", target="k2")] == [ids[2]]


async def test_teams_round_trip_and_every_change_moves_the_keys_version(
        store: AccountingStore) -> None:
    assert await store.teams() == []
    version = await store.keys_version()
    team = TeamRecord("eng", WHEN, "Engineering", 10, 1000, 3, 2.5, {"cost_center": 7})
    await store.put_team(team)
    await store.put_team(TeamRecord("ops", WHEN + timedelta(days=1)))
    assert await store.teams() == [team, TeamRecord("ops", WHEN + timedelta(days=1))]
    assert await store.keys_version() == version + 2
    changed = replace(team, rpm_limit=None, monthly_budget_usd=None, metadata={})
    await store.put_team(changed)
    assert (await store.teams())[0] == changed
    assert await store.delete_team("eng") is True
    assert await store.delete_team("eng") is False
    assert [t.id for t in await store.teams()] == ["ops"]
    assert await store.keys_version() == version + 5


async def test_the_spend_report_groups_the_ledger_by_day_key_team_and_model(
        store: AccountingStore) -> None:
    day1, day2 = datetime(2026, 11, 30, 23, 59, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    await store.settle([], [
        replace(_row("r1", day1, "m1", 0.5), team="eng"),
        replace(_row("r2", day2, "m1", 0.25, key_id="k2"), team="eng"),
        replace(_row("r3", day2, "m2", 0.125), team="ops"),
        _row("r4", day2 + timedelta(days=1), "m2", 1.0, key_id="k3"),
    ])
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    by_team = await store.spend_report(start, end, ["team"], {})
    assert by_team == [
        {"team": "eng", "requests": 2, "prompt_tokens": 20, "completion_tokens": 10,
         "cost_usd": 0.75},
        {"team": "ops", "requests": 1, "prompt_tokens": 10, "completion_tokens": 5,
         "cost_usd": 0.125}]  # r4 is on the end's day: excluded
    by_day_model = await store.spend_report(start, end + timedelta(days=1), ["day", "model"],
                                            {"key_id": "k1"})
    assert [(r["day"], r["model"], r["requests"]) for r in by_day_model] == [
        ("2026-11-30", "m1", 1), ("2026-12-01", "m2", 1)]
    by_key = await store.spend_report(day2, end + timedelta(days=1), ["key_id", "team"],
                                      {"model": "m2"})
    assert [(r["key_id"], r["team"], r["cost_usd"]) for r in by_key] == [
        ("k1", "ops", 0.125), ("k3", "", 1.0)]
    assert await store.spend_report(start, end, ["team"], {"team": "nobody"}) == []


async def test_rag_jobs_round_trip_and_old_ones_are_forgotten(store: AccountingStore) -> None:
    job = IngestJob(new_job_id(), "docs", "queued", 3, 0, 0, None, 1_000_000.0, 1_000_000.0)
    assert await store.get_rag_job(job.id) is None
    await store.put_rag_job(job)
    assert await store.get_rag_job(job.id) == job
    failed = replace(job, status="failed", documents_done=2, chunks_done=11,
                     error=JobError("interrupted", "gone é"), updated_at=1_000_050.5)
    await store.put_rag_job(failed)
    assert await store.get_rag_job(job.id) == failed  # replaced, every field as put
    later = replace(job, id=new_job_id(), created_at=job.created_at + RETENTION_S + 1)
    await store.put_rag_job(later)
    assert await store.get_rag_job(job.id) is None and await store.get_rag_job(later.id)


async def test_the_budget_holds_under_300_concurrent_reservations(
        store: AccountingStore) -> None:
    taken: list[str] = []

    async def one() -> None:
        reservation = await store.reserve("k1", "2026-11", 0.125, 12.5)  # exact in binary
        if reservation is not None:
            taken.append(reservation.id)

    async with trio.open_nursery() as nursery:
        for _ in range(300):
            nursery.start_soon(one)
    assert len(taken) == 100 and len(set(taken)) == 100
    assert await store.read("k1", "2026-11") == 12.5


async def test_concurrent_takes_admit_exactly_the_limits(store: AccountingStore) -> None:
    outcomes: list[Taken | Refusal] = []
    limits = KeyLimits(rpm=20)

    async def one(key_id: str, limits: KeyLimits) -> None:
        outcomes.append(await store.take(key_id, limits, 1, uuid.uuid4().hex, 60.0))

    async with trio.open_nursery() as nursery:
        for _ in range(60):  # RPM: a minute's burst, 20 (refilling 1 each 3 s)
            nursery.start_soon(one, "k1", limits)
        for _ in range(75):  # parallel leases: 25 open at once
            nursery.start_soon(one, "k2", KeyLimits(parallel=25))
    taken = [o for o in outcomes if isinstance(o, Taken)]
    assert len(taken) == 45
    refused = [o for o in outcomes if isinstance(o, Refusal)]
    assert sorted({o.limit for o in refused}) == ["parallel", "rpm"] and len(refused) == 90


async def test_release_gives_back_once_and_frees_the_slot(store: AccountingStore) -> None:
    limits = KeyLimits(tpm=1000, parallel=1)
    first = await store.take("k1", limits, 400, "lease-1", 60.0)
    assert isinstance(first, Taken) and first.counters.tpm is not None
    assert first.counters.tpm.tokens == pytest.approx(600, abs=2)
    refused = await store.take("k1", limits, 10, "lease-2", 60.0)
    assert isinstance(refused, Refusal) and refused.limit == "parallel"
    await store.release("k1", "lease-1", 300, False)
    await store.release("k1", "lease-1", 300, False)  # retried: gives nothing back again
    await store.release("k9", "never-taken", 300, False)
    second = await store.take("k1", limits, 0, "lease-2", 60.0)
    assert isinstance(second, Taken) and second.counters.tpm is not None
    assert second.counters.tpm.tokens == pytest.approx(900, abs=2)


async def test_a_lease_ends_by_itself(store: AccountingStore) -> None:
    limits = KeyLimits(parallel=1)
    assert isinstance(await store.take("k1", limits, 1, "dies", 0.3), Taken)
    assert isinstance(await store.take("k1", limits, 1, "waits", 0.3), Refusal)
    await trio.sleep(0.4)  # the gateway holding "dies" was killed: its slot frees itself
    taken = await store.take("k1", limits, 1, "now", 60.0)
    assert isinstance(taken, Taken) and list(taken.counters.leases) == ["now"]


async def test_calls_run_off_the_trio_thread_and_finish_when_cancelled(
        store: AccountingStore) -> None:
    started = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def slow_reserve(db: object) -> str:
        trio.from_thread.run_sync(started.set, trio_token=token)
        time.sleep(0.3)
        return str(threading.get_ident())

    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._run, slow_reserve)
            await started.wait()
            t0 = trio.current_time()
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert trio.current_time() - t0 >= 0.25  # the call was not abandoned mid-way


# -- PostgreSQL only -------------------------------------------------------------------------------
async def test_three_gateways_hold_one_budget_and_one_limit(postgres_url: str) -> None:
    stores = [await PostgresStore.open(postgres_url) for _ in range(3)]  # 3 pools, 30 conns
    reserved: list[str] = []
    admitted: list[Taken] = []

    async def reserve(store: PostgresStore) -> None:
        if (reservation := await store.reserve("k1", "2026-11", 0.125, 12.5)) is not None:
            reserved.append(reservation.id)

    async def take(store: PostgresStore) -> None:
        outcome = await store.take("k1", KeyLimits(parallel=30), 1, uuid.uuid4().hex, 60.0)
        if isinstance(outcome, Taken):
            admitted.append(outcome)

    try:
        async with trio.open_nursery() as nursery:
            for n in range(300):
                nursery.start_soon(reserve, stores[n % 3])
                nursery.start_soon(take, stores[n % 3])
        assert len(reserved) == 100 and await stores[1].read("k1", "2026-11") == 12.5
        assert len(admitted) == 30
    finally:
        for store in stores:
            await store.aclose()


async def test_a_retried_batch_adds_no_ledger_row_twice(postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    try:
        rows = [_row("r1"), _row("r1", WHEN + timedelta(seconds=1)), _row("r2")]
        await store.settle([], rows)
        await store.settle([], rows)  # the first commit's answer was lost: sent again
        usage = await store.usage("k1", WHEN)
        assert usage[0]["requests"] == 3  # a client's reused request id is still two rows
    finally:
        await store.aclose()


async def test_migrations_apply_once_when_gateways_start_together(postgres_url: str) -> None:
    stores: list[PostgresStore] = []

    async def start() -> None:
        stores.append(await PostgresStore.open(postgres_url))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(start)
    try:
        applied, pending = await stores[0].migration_status()
        assert [a.version for a in applied] == [m.version for m in MIGRATIONS] and not pending
        assert await stores[1].migrate() == []
    finally:
        for store in stores:
            await store.aclose()


async def test_postgres_errors_become_store_unavailable(postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store._run(lambda conn: conn.execute("SELECT * FROM nowhere"))
        assert caught.value.status == 503 and caught.value.code == "key_store_unavailable"
        await store.ping()  # the connection went back to the pool usable
    finally:
        await store.aclose()


async def test_an_outage_gives_503_fast_and_the_same_store_recovers(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    try:
        assert await store.reserve("k1", "2026-11", 1.0, None) is not None
        await trio.to_thread.run_sync(postgres_server.stop)
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.reserve("k1", "2026-11", 1.0, None)
            assert time.monotonic() - t0 < 5.0  # a 503, not a hang
        await trio.to_thread.run_sync(postgres_server.start)
        with trio.fail_after(20):
            while True:
                try:
                    await store.ping()
                    break
                except StoreUnavailable:
                    await trio.sleep(0.2)
        assert await store.reserve("k1", "2026-11", 1.0, None) is not None
        assert await store.read("k1", "2026-11") == 2.0
    finally:
        await trio.to_thread.run_sync(postgres_server.start)
        await store.aclose()


async def test_an_unreachable_database_stops_the_start_for_a_retry(
        postgres_server: PostgresServer) -> None:
    # unreachable: an OSError (exit 1, systemd restarts); refused (a bad password or database):
    # a ConfigError (exit 2, not restarted)
    url = postgres_server.url().replace(f":{postgres_server.port}/", ":9/")
    with trio.fail_after(10), pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9"):
        await PostgresStore.open(url)
    missing = postgres_server.url("no_such_database")
    with trio.fail_after(10), pytest.raises(ConfigError) as caught:
        await PostgresStore.open(missing)
    assert caught.value.key == "DATABASE_URL" and "no_such_database" in caught.value.problem


def _ailb_db(*args: str, data: Path, url: str | None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("AILB_", "HTTP_")) and k != "DATABASE_URL"}
    environ.update({"AILB_DATA_DIR": str(data), **({"DATABASE_URL": url} if url else {})})
    return subprocess.run([sys.executable, "-m", "ailb", "db", *args], env=environ, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_ailb_db_migrate_and_status(postgres_url: str, tmp_path: Path) -> None:
    first = _ailb_db("migrate", data=tmp_path, url=postgres_url)
    assert first.returncode == 0, first.stderr
    assert "applied 0001" in first.stdout and "up to date" in first.stdout
    again = _ailb_db("migrate", data=tmp_path, url=postgres_url)
    assert again.returncode == 0 and "nothing to apply" in again.stdout
    status = _ailb_db("status", data=tmp_path, url=postgres_url)
    assert status.returncode == 0 and f"{len(MIGRATIONS)} applied, 0 pending" in status.stdout
    unset = _ailb_db("migrate", data=tmp_path, url=None)
    assert unset.returncode == 2 and "DATABASE_URL is not set" in unset.stderr
    down = _ailb_db("migrate", data=tmp_path, url="postgresql://u:hunter2@127.0.0.1:9/x")
    assert down.returncode == 1 and "cannot reach" in down.stderr
    assert "hunter2" not in down.stderr


async def test_console_sessions_are_shared_and_expire(opener: Opener) -> None:
    """A console session made through one store object (one gateway, one worker) is valid
    through another on the same data, ends everywhere at sign-out, and expires when idle or
    too old (the clock is passed in)."""
    from ailb.config.schema import ConsoleSettings
    from ailb.console.sessions import ConsoleSessions

    first, second = await opener(), await opener()
    now = [1000.0]
    live = [ConsoleSettings(session_idle_s=10, session_max_s=25)]
    try:
        here = ConsoleSessions(first, lambda: live[0], lambda: now[0], "admin-key-1")
        there = ConsoleSessions(second, lambda: live[0], lambda: now[0], "admin-key-1")
        opened = await here.open()
        assert await there.valid(opened.session_id)
        assert not await there.valid(opened.session_id + "x")
        now[0] += 9  # used within the idle time: moves "last used"
        assert await there.valid(opened.session_id)
        now[0] += 9
        assert await here.valid(opened.session_id)
        now[0] += 8  # 26 s after sign-in: past the absolute limit, though used 8 s ago
        assert not await here.valid(opened.session_id)
        idle = await here.open()
        now[0] += 10.5  # idle too long
        assert not await there.valid(idle.session_id)
        ended = await here.open()
        assert await there.close(ended.session_id)
        assert not await here.valid(ended.session_id)
        assert not await there.close(ended.session_id)
        live[0] = ConsoleSettings(session_idle_s=100, session_max_s=1000)  # a reload
        later = await here.open()
        now[0] += 50
        assert await there.valid(later.session_id)
        # a gateway with another admin key accepts none of the old key's sessions
        rotated = ConsoleSessions(second, lambda: live[0], lambda: now[0], "admin-key-2")
        assert not await rotated.valid(later.session_id)
        assert await here.valid(later.session_id)
        mine = await rotated.open()
        assert await rotated.close_all() == 2  # every session, whichever key opened it
        assert not await here.valid(later.session_id)
        assert not await rotated.valid(mine.session_id)
    finally:
        await first.aclose()
        await second.aclose()
