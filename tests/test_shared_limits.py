"""Rate limits shared by several gateways (ailb.accounting.counters, shared_limits, and the
gate over them): the pure counters as properties, then three gates on one SQLite file (as three
worker processes share it) held to exact limits under 3 x 100 requests in flight, then the
outage policy. PostgreSQL and Redis/Valkey hold the same counters: their own tests run the
same checks against real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ailb.accounting import counters
from ailb.accounting.counters import Counters, Taken
from ailb.accounting.gate import Gate, Ticket
from ailb.accounting.ledger import Ledger
from ailb.accounting.outage import OutagePolicy, SharedHealth
from ailb.accounting.reservations import KeyLimits, Refusal
from ailb.accounting.shared_limits import SharedLimiter
from ailb.errors import BudgetExceeded, GatewayError, RateLimited, StoreUnavailable
from ailb.keys.records import KeyRecord
from ailb.keys.store import SqliteStore
from ailb.model import Usage
from ailb.pricing import Price, PriceTable

WHEN = datetime(2026, 12, 6, 12, tzinfo=UTC)
TARGETS = [("m", "openai")]


# --- the pure counters ----------------------------------------------------------------------------
ops = st.lists(st.one_of(
    st.tuples(st.just("take"), st.floats(0, 0.5), st.integers(1, 900)),
    st.tuples(st.just("release"), st.floats(0, 0.5), st.integers(0, 900)),
    st.tuples(st.just("cancel"), st.floats(0, 0.5)),
    st.tuples(st.just("again"), st.floats(0, 30)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(rpm=st.none() | st.integers(1, 20), tpm=st.none() | st.integers(50, 2000),
       parallel=st.none() | st.integers(1, 6), lease_s=st.floats(0.5, 30), steps=ops)
def test_counters_never_pass_a_limit(rpm: int | None, tpm: int | None, parallel: int | None,
                                     lease_s: float, steps: list[tuple]) -> None:
    limits = KeyLimits(rpm, tpm, parallel)
    state, now, n = Counters(), 1000.0, 0
    admitted: list[float] = []  # when each take (not cancelled) happened
    leases: list[str] = []
    released: list[str] = []
    for step in steps:
        now += step[1]
        if step[0] == "take":
            outcome = counters.take(state, limits, step[2], f"l{n}", now, lease_s)
            n += 1
            too_large = tpm is not None and step[2] > tpm
            if isinstance(outcome, Refusal):  # too large: refused first, for good
                assert too_large == (outcome.limit == "tpm" and outcome.retry_after_s is None)
                continue
            assert not too_large
            state = outcome
            admitted.append(now)
            leases.append(f"l{n - 1}")
            live = [end for end in state.leases.values() if end > now]
            assert parallel is None or len(live) <= parallel
        elif step[0] in ("release", "cancel") and leases:
            lease = leases.pop(0)
            before = state
            state = counters.release(state, lease, step[2] if step[0] == "release" else 0,
                                     step[0] == "cancel", now)
            if step[0] == "cancel" and lease in before.leases:
                admitted.pop()
            released.append(lease)
        elif step[0] == "again" and released:  # a release retried changes nothing
            assert counters.release(state, released[-1], 10, True, now) == state
        if state.tpm is not None:
            assert 0 <= state.tpm.tokens <= state.tpm.capacity + 1e-9
        if rpm is not None:  # within any span, at most a minute's burst plus the refill
            first = admitted[0] if admitted else now
            assert len(admitted) <= rpm + (now - first) * rpm / 60 + 1e-6


def test_counters_round_trip_as_text_and_leases_end() -> None:
    limits = KeyLimits(rpm=10, tpm=1000, parallel=1)
    text, outcome = counters.apply_take(None, limits, 100, "a", 50.0, lease_s=5)
    assert isinstance(outcome, Taken) and text is not None
    assert counters.loads(text) == outcome.counters
    _, refused = counters.apply_take(text, limits, 100, "b", 51.0, lease_s=5)
    assert isinstance(refused, Refusal) and refused.limit == "parallel"
    _, later = counters.apply_take(text, limits, 100, "b", 56.0, lease_s=5)  # "a" ended
    assert isinstance(later, Taken) and set(later.counters.leases) == {"b"}
    assert counters.apply_release(text, "zzz", 10, False, 52.0) is None  # unknown lease


# --- three gates on one SQLite file ------------------------------------------------------
def key(**limits: object) -> KeyRecord:
    return KeyRecord(id="k1", name="k", secret_hash="h", created_at=WHEN,
                     **limits)  # type: ignore[arg-type]


class Gates:
    def __init__(self, gates: list[Gate], stores: list[SqliteStore]) -> None:
        self.gates, self.stores = gates, stores


@pytest.fixture
async def three_gates(tmp_path: Path) -> AsyncIterator[Gates]:
    stores = [await SqliteStore.open(tmp_path / "ailb.db") for _ in range(3)]
    gates = []
    async with trio.open_nursery() as nursery:
        for store in stores:
            ledger = Ledger(store, flush_s=0.01)
            await nursery.start(ledger.run)
            health = SharedHealth(("store", "counters"))
            # a frozen clock: on a loaded machine 300 admissions may take seconds, and no
            # bucket may refill meanwhile (the counts below are exact)
            limiter = SharedLimiter(store, OutagePolicy("share", 3), health, _frozen)
            gates.append(Gate(store, ledger, PriceTable({"m": Price(100, 100)}), "monthly", 100,
                              lambda: WHEN, _frozen, limiter, health))
        yield Gates(gates, stores)
        nursery.cancel_scope.cancel()
    for store in stores:
        await store.aclose()


def _frozen() -> float:
    return 1000.0


async def admit_all(gates: list[Gate], record: KeyRecord, each: int,
                    hold: trio.Event | None = None) -> tuple[list[Ticket], list[GatewayError]]:
    """``each`` admissions per gate at once. With ``hold``, every admitted request is held
    until all of them have been answered (none gives back what it did not use before)."""
    tickets: list[Ticket] = []
    refused: list[GatewayError] = []
    total = len(gates) * each

    async def one(gate: Gate) -> None:
        try:
            ticket = await gate.admit(record, "m", TARGETS, 10, 10)
        except GatewayError as exc:
            refused.append(exc)
            if hold is not None and len(tickets) + len(refused) == total:
                hold.set()
            return
        tickets.append(ticket)
        if hold is not None:
            if len(tickets) + len(refused) == total:
                hold.set()
            await hold.wait()
        await gate.settle(ticket, None, 0, ("m", "openai", "d"), "r", 200, 0.01)

    async with trio.open_nursery() as nursery:
        for gate in gates:
            for _ in range(each):
                nursery.start_soon(one, gate)
    return tickets, refused


async def test_rpm_is_exact_across_three_gates(three_gates: Gates) -> None:
    tickets, refused = await admit_all(three_gates.gates, key(rpm_limit=40), 100)
    assert len(tickets) == 40
    assert len(refused) == 260 and all(isinstance(e, RateLimited) for e in refused)
    assert all(e.code == "rpm_limit_exceeded" for e in refused)


async def test_parallel_is_exact_across_three_gates(three_gates: Gates) -> None:
    tickets, refused = await admit_all(three_gates.gates, key(max_parallel_requests=7), 100,
                                       hold=trio.Event())
    assert len(tickets) == 7 and len(refused) == 293
    # every slot was given back: the next request is admitted
    ticket = await three_gates.gates[1].admit(key(max_parallel_requests=7), "m", TARGETS, 1, 1)
    assert ticket.lease is not None and ticket.lease.lease_id is not None


async def test_tpm_and_budget_across_three_gates(three_gates: Gates) -> None:
    # 20 tokens reserved per request; 1000 TPM admits 50 of 300 (all held: a settled request
    # gives back the tokens it did not use)
    tickets, refused = await admit_all(three_gates.gates, key(tpm_limit=1000), 100,
                                       hold=trio.Event())
    assert len(tickets) == 50 and all(e.code == "tpm_limit_exceeded" for e in refused)
    # a budget: $0.002 per request at worst ($100/Mtok x 20 tokens), $0.0505 admits 25
    record = KeyRecord(id="k2", name="k", secret_hash="h", created_at=WHEN,
                       monthly_budget_usd=0.0505)
    tickets, _ = await admit_all(three_gates.gates, record, 100, hold=trio.Event())
    assert len(tickets) == 25
    assert await three_gates.stores[0].read("k2", "2026-12") <= 0.0505


async def test_rate_limit_headers_come_from_the_shared_counters(three_gates: Gates) -> None:
    record = key(rpm_limit=10)
    first = await three_gates.gates[0].admit(record, "m", TARGETS, 1, 1)
    second = await three_gates.gates[2].admit(record, "m", TARGETS, 1, 1)
    assert first.headers["x-ratelimit-remaining-requests"] == "9"
    assert second.headers["x-ratelimit-remaining-requests"] == "8"


# --- the outage policy ------------------------------------------------------------------
class Unreachable:
    """Shared counters that are down until ``up`` is set: a stand-in of our own protocol
    for the policy's logic (the real servers' outages are tested with them)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.up = False

    async def take(self, key_id: str, limits: KeyLimits, tokens: int, lease: str,
                   lease_s: float) -> Taken | Refusal:
        if not self.up:
            raise StoreUnavailable("connection refused", code="shared_state_unavailable")
        return await self.inner.take(key_id, limits, tokens, lease, lease_s)

    async def release(self, key_id: str, lease: str, unused_tokens: int,
                      cancel: bool) -> None:
        if not self.up:
            raise StoreUnavailable("connection refused", code="shared_state_unavailable")
        await self.inner.release(key_id, lease, unused_tokens, cancel)


@pytest.mark.parametrize("policy", ["share", "closed", "open"])
async def test_outage_policy(tmp_path: Path, policy: str) -> None:
    store = await SqliteStore.open(tmp_path / "ailb.db")
    down = Unreachable(store)
    health = SharedHealth(("store", "counters"))
    fallbacks: list[str] = []
    limiter = SharedLimiter(down, OutagePolicy(policy, share=4), health, trio.current_time,
                            fallbacks.append)
    async with trio.open_nursery() as nursery:
        ledger = Ledger(store, flush_s=0.01)
        await nursery.start(ledger.run)
        gate = Gate(store, ledger, PriceTable({}), "monthly", 100, lambda: WHEN,
                    trio.current_time, limiter, health)
        tickets, refused = await admit_all([gate], key(rpm_limit=40), 30)
        assert not health.up("counters") and health.up("store")
        assert fallbacks and set(fallbacks) == {policy}
        if policy == "share":  # a quarter of the limit, from this gateway alone
            assert len(tickets) == 10 and all(isinstance(e, RateLimited) for e in refused)
        elif policy == "closed":
            assert not tickets and all(isinstance(e, StoreUnavailable) for e in refused)
            assert refused[0].status == 503 and refused[0].retry_after_s
        else:
            assert len(tickets) == 30
        down.up = True  # recovery: the next request uses the shared counters again
        ticket = await gate.admit(key(rpm_limit=40), "m", TARGETS, 1, 1)
        assert ticket.lease is not None and ticket.lease.lease_id is not None
        assert health.up("counters")
        nursery.cancel_scope.cancel()
    await store.aclose()


async def test_a_request_larger_than_the_tpm_is_refused_for_good_outage_or_not(
        tmp_path: Path) -> None:
    """Shared counters refuse a request larger than the whole TPM at once; in an outage
    (``share``), one larger than this gateway's share but within the limit only waits."""
    store = await SqliteStore.open(tmp_path / "ailb.db")
    down = Unreachable(store)
    down.up = True
    health = SharedHealth(("store", "counters"))
    limiter = SharedLimiter(down, OutagePolicy("share", share=4), health, trio.current_time)
    record = key(tpm_limit=100, max_parallel_requests=1)
    async with trio.open_nursery() as nursery:
        ledger = Ledger(store, flush_s=0.01)
        await nursery.start(ledger.run)
        gate = Gate(store, ledger, PriceTable({}), "monthly", 100, lambda: WHEN,
                    trio.current_time, limiter, health)
        for up in (True, False):
            down.up = up
            with pytest.raises(RateLimited) as final:
                await gate.admit(record, "m", TARGETS, 10, 91)
            assert final.value.retry_after_s is None and final.value.code == "tpm_limit_exceeded"
            assert final.value.headers["x-should-retry"] == "false"
            assert "limit 100, requested 101 " in final.value.message
        with pytest.raises(RateLimited) as waits:  # 30 > 100 / 4, the share: it only waits
            await gate.admit(record, "m", TARGETS, 10, 20)
        assert waits.value.retry_after_s and "x-should-retry" not in waits.value.headers
        down.up = True
        ticket = await gate.admit(record, "m", TARGETS, 10, 90)  # the whole limit is fine
        await gate.settle(ticket, None, 0, None, "r", 200, 0.01)
        nursery.cancel_scope.cancel()
    await store.aclose()


# --- the budget across gateways: the store's check is the one ---------------------------------
async def test_a_gateway_that_saw_others_in_flight_admits_once_they_settled(
        three_gates: Gates) -> None:
    a, b, _ = three_gates.gates
    record = KeyRecord(id="k3", name="k", secret_hash="h", created_at=WHEN,
                       monthly_budget_usd=0.005)  # $0.002 reserved a request
    held = [await a.admit(record, "m", TARGETS, 10, 10) for _ in range(2)]
    with pytest.raises(BudgetExceeded):  # $0.004 held by A: B's first look at the key
        await b.admit(record, "m", TARGETS, 10, 10)
    for n, ticket in enumerate(held):  # each cost $0.0002 in the end
        await a.settle(ticket, Usage(1, 1), 0, ("m", "openai", "d"), f"r{n}", 200, 0.1)
    await trio.sleep(0.2)  # A's ledger writes the settlements (flush_s 0.01)
    ticket = await b.admit(record, "m", TARGETS, 10, 10)  # B does not keep its old view
    assert float(ticket.headers["x-ailb-key-spend"]) == pytest.approx(0.0024)


class SlowReserve:
    """A store whose reservations wait for ``go`` (a connection pool that is busy)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store, self.go = store, trio.Event()
        self.go.set()

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def reserve(self, *args: object) -> object:
        await self.go.wait()
        return await self.store.reserve(*args)  # type: ignore[arg-type]


async def test_a_give_back_committed_while_a_reservation_waits_is_not_counted_twice(
        tmp_path: Path) -> None:
    slow, other = SlowReserve(await SqliteStore.open(tmp_path / "ailb.db")), \
        await SqliteStore.open(tmp_path / "ailb.db")
    record = KeyRecord(id="k", name="k", secret_hash="h", created_at=WHEN,
                       monthly_budget_usd=0.005)
    async with trio.open_nursery() as nursery:
        gates = []
        for store, ack in ((slow, False), (other, True)):
            ledger = Ledger(store, flush_s=0.05, ack=ack)  # type: ignore[arg-type]
            await nursery.start(ledger.run)
            health = SharedHealth(("store", "counters"))
            gates.append(Gate(store, ledger, PriceTable({"m": Price(100, 100)}),  # type: ignore[arg-type]
                              "monthly", 10, lambda: WHEN, trio.current_time,
                              SharedLimiter(store, OutagePolicy("share", 2), health,  # type: ignore[arg-type]
                                            trio.current_time), health))
        a, b = gates
        first = await a.admit(record, "m", TARGETS, 10, 10)  # $0.002, costs $0.0002: A's
        await a.settle(first, Usage(1, 1), 0, ("m", "openai", "d"), "r1", 200, 0.1)  # credit
        slow.go = trio.Event()
        outcomes: list[object] = []

        async def a_again() -> None:
            try:
                outcomes.append(await a.admit(record, "m", TARGETS, 10, 10))
            except BudgetExceeded as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as inner:
            inner.start_soon(a_again)
            await trio.sleep(0.3)  # A's ledger writes the give-back meanwhile
            for _ in range(2):  # and B spends what the store then has: $0.0002 + 2 x $0.002
                await b.admit(record, "m", TARGETS, 10, 10)
            slow.go.set()
        assert isinstance(outcomes[0], BudgetExceeded)
        assert await other.read("k", "2026-12") <= 0.005
        nursery.cancel_scope.cancel()
