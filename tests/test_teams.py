"""Teams: a team's limits and budget on top of its keys' (the gate, with the in-memory store of
tests/test_gate.py, then several gates sharing one SQLite file as worker processes do), the
pure team and spend-report rules, and the admin API over HTTP (teams, /admin/spend) against
ledger rows made by real requests through the echo upstream."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from ailb.accounting import spend_report, teams
from ailb.accounting.gate import Gate, Ticket
from ailb.accounting.ledger import Ledger
from ailb.accounting.outage import OutagePolicy, SharedHealth
from ailb.accounting.shared_limits import SharedLimiter
from ailb.errors import BudgetExceeded, GatewayError, InvalidRequest, RateLimited
from ailb.keys.records import KeyRecord, TeamRecord
from ailb.keys.registry import KeyRegistry
from ailb.keys.store import SqliteStore
from ailb.model import Usage
from ailb.pricing import Price, PriceTable
from tests.conftest import StartGateway, auth
from tests.test_gate import MemoryStore
from tests.test_keys import PRICED, chat, create_key

WHEN = datetime(2026, 12, 6, 12, tzinfo=UTC)
PERIOD = "2026-12"
TARGETS = [("m", "openai")]  # $0.0001 a token: 10 + 10 tokens reserve $0.002 at worst


def _key(key_id: str, team: str = "t", **limits: Any) -> KeyRecord:
    return KeyRecord(id=key_id, name=key_id, secret_hash="h", created_at=WHEN, team=team,
                     **limits)


def _team(team_id: str = "t", **limits: Any) -> TeamRecord:
    return TeamRecord(id=team_id, created_at=WHEN, **limits)


def _gate(store: Any, team: TeamRecord | None, limiter: SharedLimiter | None = None,
          health: SharedHealth | None = None) -> tuple[Gate, Ledger]:
    ledger = Ledger(store, flush_s=0.01, retry_s=0.01)
    gate = Gate(store, ledger, PriceTable({"m": Price(100, 100)}), "monthly", 100,
                lambda: WHEN, lambda: 1000.0, limiter, health,
                lambda team_id: team if team is not None and team.id == team_id else None)
    return gate, ledger


async def _admit_held(gates: list[Gate], keys: list[KeyRecord], each: int,
                      ) -> tuple[list[Ticket], list[GatewayError]]:
    """``each`` requests per (gate, key) at once, all held in flight until every one has been
    answered; then settled at a cost of $0.001 (10 tokens)."""
    tickets: list[Ticket] = []
    refused: list[GatewayError] = []
    total = len(gates) * len(keys) * each
    everyone = trio.Event()

    async def one(gate: Gate, key: KeyRecord) -> None:
        try:
            ticket = await gate.admit(key, "m", TARGETS, 10, 10)
        except GatewayError as exc:
            refused.append(exc)
        else:
            tickets.append(ticket)
        if len(tickets) + len(refused) == total:
            everyone.set()
        await everyone.wait()

    async with trio.open_nursery() as nursery:
        for gate in gates:
            for key in keys:
                for _ in range(each):
                    nursery.start_soon(one, gate, key)
    return tickets, refused


async def _settle_all(gate_of: dict[int, Gate], tickets: list[Ticket]) -> None:
    for ticket in tickets:
        await gate_of[id(ticket)].settle(ticket, Usage(5, 5), 0, ("m", "openai", "d"),
                                         f"r{id(ticket)}", 200, 0.01)


# --- one gateway: in memory, exact --------------------------------------------------------------
async def test_a_team_budget_holds_across_two_keys_with_100_in_flight() -> None:
    store = MemoryStore()
    gate, ledger = _gate(store, _team(monthly_budget_usd=0.0505))
    keys = [_key("k1", monthly_budget_usd=1.0), _key("k2")]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.run)
        tickets, refused = await _admit_held([gate], keys, 50)
        # $0.002 each at worst: 25 fit the team's $0.0505, whichever key asks
        assert len(tickets) == 25 and len(refused) == 75
        assert all(isinstance(e, BudgetExceeded) and e.code == "team_budget_exceeded"
                   and e.status == 402 and "Team `t`" in e.message for e in refused)
        assert {t.key.id for t in tickets} == {"k1", "k2"}
        # write-ahead: the team's worst case is in the store while the calls are in flight
        assert store.spend["team:t", PERIOD] == pytest.approx(0.05)
        # what the refused requests took from their keys was given back
        k1 = sum(t.key.id == "k1" for t in tickets)
        assert store.spend["k1", PERIOD] == pytest.approx(0.002 * k1)
        await _settle_all({id(t): gate for t in tickets}, tickets)
        await ledger.close()
        nursery.cancel_scope.cancel()
    # settled at $0.001 each (10 tokens), in the team's spend and each key's
    assert store.spend["team:t", PERIOD] == pytest.approx(0.025)
    assert store.spend["k1", PERIOD] + store.spend["k2", PERIOD] == pytest.approx(0.025)
    assert not store.reservations
    assert {row.team for row in store.ledger} == {"t"} and len(store.ledger) == 25
    assert await gate.spent("team:t", PERIOD) == pytest.approx(0.025)


async def test_a_team_rpm_across_keys_and_the_keys_own_limits_still_apply() -> None:
    store = MemoryStore()
    gate, _ = _gate(store, _team(rpm_limit=30))
    keys = [_key("k1", rpm_limit=10), _key("k2"), _key("k3")]
    tickets, refused = await _admit_held([gate], keys, 20)
    assert len(tickets) == 30
    per_key = {k.id: sum(t.key.id == k.id for t in tickets) for k in keys}
    assert per_key["k1"] <= 10  # its own RPM too
    codes = {e.code for e in refused}
    assert codes <= {"rpm_limit_exceeded", "team_rate_limit_exceeded"}
    team_refusals = [e for e in refused if e.code == "team_rate_limit_exceeded"]
    assert team_refusals and all(isinstance(e, RateLimited) and e.retry_after_s
                                 for e in team_refusals)


async def test_a_key_naming_no_known_team_has_no_team_limits_but_its_rows_name_it() -> None:
    store = MemoryStore()
    gate, ledger = _gate(store, _team(rpm_limit=1))
    key = _key("k1", team="from-yaml")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.run)
        for _ in range(3):
            ticket = await gate.admit(key, "m", TARGETS, 10, 10)
            assert ticket.team is None
            await gate.settle(ticket, Usage(5, 5), 0, ("m", "openai", "d"), "r", 200, 0.01)
        await ledger.close()
    assert [row.team for row in store.ledger] == ["from-yaml"] * 3
    assert not any(subject.startswith("team:") for subject, _ in store.spend)


async def test_a_team_refusal_by_the_stores_budget_check_undoes_the_keys_reservation() -> None:
    store = MemoryStore()
    gate, _ = _gate(store, _team(monthly_budget_usd=0.003))
    store.spend["team:t", PERIOD] = 0.002  # another gateway spent it (not seen here yet)
    gate_state_read = await gate.spent("team:t", PERIOD)
    assert gate_state_read == pytest.approx(0.002)
    first = _key("k1", monthly_budget_usd=1.0)
    with pytest.raises(BudgetExceeded) as refused:
        await gate.admit(first, "m", TARGETS, 10, 10)
    assert refused.value.code == "team_budget_exceeded"
    assert store.spend["k1", PERIOD] == 0.0 and not store.reservations


# --- gateways sharing one SQLite file (as worker processes) -------------------------------------
@pytest.fixture
async def two_gates(tmp_path: Path, request: pytest.FixtureRequest,
                    ) -> AsyncIterator[tuple[list[Gate], SqliteStore]]:
    """Two gates on one SQLite file, the team's limits as the test's parameter."""
    stores = [await SqliteStore.open(tmp_path / "ailb.db") for _ in range(2)]
    team = _team(**request.param)
    gates = []
    async with trio.open_nursery() as nursery:
        for store in stores:
            health = SharedHealth(("store", "counters"))
            limiter = SharedLimiter(store, OutagePolicy("share", 2), health, lambda: 1000.0)
            gate, ledger = _gate(store, team, limiter, health)
            await nursery.start(ledger.run)
            gates.append(gate)
        yield gates, stores[0]
        nursery.cancel_scope.cancel()
    for store in stores:
        await store.aclose()


@pytest.mark.parametrize("two_gates", [{"monthly_budget_usd": 0.0505}], indirect=True)
async def test_a_team_budget_holds_across_two_gateways_and_two_keys(
        two_gates: tuple[list[Gate], SqliteStore]) -> None:
    gates, store = two_gates
    tickets, refused = await _admit_held(gates, [_key("k1"), _key("k2")], 50)  # 200 at once
    assert len(tickets) == 25
    assert {e.code for e in refused} == {"team_budget_exceeded"}
    assert await store.read("team:t", PERIOD) == pytest.approx(0.05)
    assert await store.read("k1", PERIOD) + await store.read("k2", PERIOD) == \
        pytest.approx(0.05)


@pytest.mark.parametrize("two_gates", [{"rpm_limit": 60}], indirect=True)
async def test_a_team_rpm_holds_across_two_gateways(
        two_gates: tuple[list[Gate], SqliteStore]) -> None:
    gates, _ = two_gates
    keys = [_key("k1"), _key("k2"), _key("k3")]
    tickets, refused = await _admit_held(gates, keys, 5)  # 30 of the team's 60: all pass
    assert len(tickets) == 30 and not refused
    tickets, refused = await _admit_held(gates, keys, 10)  # 60 more: 30 left in the minute
    assert len(tickets) == 30
    assert all(e.code == "team_rate_limit_exceeded" for e in refused) and len(refused) == 30


# --- pure rules -----------------------------------------------------------------------------------
def test_a_refusal_of_the_team_names_the_team() -> None:
    assert teams.subject("eng") == "team:eng"
    budget = teams.team_error(BudgetExceeded("This key's budget of $1.00 for 2026-12 cannot "
                                             "cover this request."), "eng")
    assert (budget.code, budget.status) == ("team_budget_exceeded", 402)
    assert budget.message.startswith("Team `eng`'s budget of $1.00")
    limited = RateLimited("This key allows 2 requests in parallel.",
                          code="parallel_limit_exceeded", retry_after_s=1)
    limited.headers = {"x-ratelimit-remaining-requests": "0", "x-should-retry": "false"}
    out = teams.team_error(limited, "eng")
    assert (out.code, out.retry_after_s, out.message) == (
        "team_rate_limit_exceeded", 1, "Team `eng` allows 2 requests in parallel.")
    assert out.headers == {"x-should-retry": "false"}


def test_the_spend_report_query() -> None:
    today = date(2026, 12, 6)
    query = spend_report.parse_query({}, today)
    assert (query.start, query.end, query.group_by, query.csv) == (
        date(2026, 12, 1), today, ("day",), False)
    query = spend_report.parse_query({"start": "2026-11-30", "end": "2026-12-01",
                                      "group_by": "team,key,team", "format": "csv",
                                      "model": "m", "team": ""}, today)
    assert query.group_by == ("team", "key") and query.filters == {"model": "m"}
    assert query.fields == ["team", "key_id"]
    assert (query.since, query.until) == (datetime(2026, 11, 30, tzinfo=UTC),
                                          datetime(2026, 12, 2, tzinfo=UTC))
    assert spend_report.columns(query)[:3] == ["team", "key_id", "key_name"]
    for bad, param in (({"start": "2026-12-7"}, "start"), ({"end": "x"}, "end"),
                       ({"start": "2026-12-05", "end": "2026-12-04"}, "start"),
                       ({"group_by": "user"}, "group_by"), ({"group_by": ","}, "group_by"),
                       ({"format": "xml"}, "format")):
        with pytest.raises(InvalidRequest) as error:
            spend_report.parse_query(bad, today)
        assert error.value.param == param


def test_the_spend_report_csv_defuses_formulas() -> None:
    query = spend_report.parse_query({"group_by": "model"}, date(2026, 12, 6))
    rows = spend_report.rows(query, [{"model": "=cmd()", "requests": 2, "prompt_tokens": 3,
                                      "completion_tokens": 4, "cost_usd": 0.1234567}],
                             lambda key_id: "")
    assert spend_report.totals(rows) == {"requests": 2, "prompt_tokens": 3,
                                         "completion_tokens": 4, "cost_usd": 0.123457}
    lines = list(csv.reader(io.StringIO(spend_report.as_csv(query, rows))))
    assert lines == [["model", "requests", "prompt_tokens", "completion_tokens", "cost_usd"],
                     ["'=cmd()", "2", "3", "4", "0.123457"]]


# --- the admin API over HTTP, against rows made by real requests --------------------------------
async def _team_call(http: httpx.AsyncClient, method: str, url: str,
                     **body: Any) -> httpx.Response:
    return await http.request(method, url, headers=auth(), json=body or None)


async def test_teams_crud_budget_and_spend_reports_over_http(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway(**PRICED)).http_url  # $0.10 a request (see test_keys.py)
    teams_url = f"{url}/admin/teams"
    made = await _team_call(http, "POST", teams_url, id="eng", monthly_budget_usd=0.25,
                            description="Engineering", metadata={"cost_center": 7})
    assert made.status_code == 201, made.text
    assert {k: v for k, v in made.json().items() if k != "created_at"} == {
        "object": "team", "id": "eng", "description": "Engineering", "rpm_limit": None,
        "tpm_limit": None, "max_parallel_requests": None, "monthly_budget_usd": 0.25,
        "metadata": {"cost_center": 7}, "spend_usd": 0.0, "keys": 0}
    again = await _team_call(http, "POST", teams_url, id="eng")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "team_exists")
    bad = await _team_call(http, "POST", teams_url, id="-eng")
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "id")
    assert (await _team_call(http, "POST", teams_url, id="ops")).status_code == 201
    patched = await _team_call(http, "PATCH", f"{teams_url}/ops", description="Operations",
                               rpm_limit=100)
    assert (patched.json()["description"], patched.json()["rpm_limit"]) == ("Operations", 100)
    missing = await http.get(f"{teams_url}/nope", headers=auth())
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "team_not_found")
    assert (await http.get(teams_url, headers=auth(key="sk-x"))).status_code == 401

    a, b = (await create_key(http, url, name="alice", team="eng"),
            await create_key(http, url, name="bob", team="eng"))
    c, d = await create_key(http, url, team="ops"), await create_key(http, url)
    for key in (a, b, c, d):
        assert (await chat(http, url, key["key"])).status_code == 200
    refused = await chat(http, url, a["key"])  # $0.20 spent: $0.10 more passes $0.25
    assert (refused.status_code, refused.json()["error"]["code"]) == (402,
                                                                      "team_budget_exceeded")
    listed = (await http.get(teams_url, headers=auth())).json()
    assert [(t["id"], t["keys"], t["spend_usd"]) for t in listed["data"]] == [
        ("eng", 2, 0.2), ("ops", 1, 0.1)]
    usage = (await http.get(f"{teams_url}/eng/usage", headers=auth())).json()
    assert (usage["team"], usage["requests"], usage["spend_usd"],
            usage["budget_remaining_usd"]) == ("eng", 2, 0.2, 0.05)
    assert [r["model"] for r in usage["by_day_and_model"]] == ["echo-1"]

    today = datetime.now(UTC).date().isoformat()
    report = (await http.get(f"{url}/admin/spend?group_by=team", headers=auth())).json()
    assert (report["object"], report["end"], report["group_by"]) == ("spend_report", today,
                                                                     ["team"])
    assert [(r["team"], r["requests"], r["cost_usd"]) for r in report["data"]] == [
        ("", 1, 0.1), ("eng", 2, 0.2), ("ops", 1, 0.1)]
    assert report["totals"]["requests"] == 4 and report["totals"]["cost_usd"] == 0.4
    by_key = (await http.get(f"{url}/admin/spend", headers=auth(), params={
        "group_by": "key,model", "team": "eng", "start": today, "end": today})).json()
    assert sorted((r["key_name"], r["model"], r["requests"]) for r in by_key["data"]) == [
        ("alice", "echo-1", 1), ("bob", "echo-1", 1)]
    by_day = (await http.get(f"{url}/admin/spend?group_by=day,team&model=echo-1",
                             headers=auth())).json()["data"]
    assert [(r["day"], r["team"]) for r in by_day] == [(today, ""), (today, "eng"),
                                                      (today, "ops")]
    exported = await http.get(f"{url}/admin/spend?group_by=team,model&format=csv",
                              headers=auth())
    assert exported.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(exported.text)))
    assert lines[0] == ["team", "model", "requests", "prompt_tokens", "completion_tokens",
                        "cost_usd"]
    assert [line[:3] for line in lines[1:]] == [["", "echo-1", "1"], ["eng", "echo-1", "2"],
                                                ["ops", "echo-1", "1"]]
    nothing = (await http.get(f"{url}/admin/spend?start=2001-01-01&end=2001-01-31",
                              headers=auth())).json()
    assert nothing["data"] == [] and nothing["totals"]["requests"] == 0
    wrong = await http.get(f"{url}/admin/spend?group_by=user", headers=auth())
    assert (wrong.status_code, wrong.json()["error"]["param"]) == (400, "group_by")

    # a key moves to another team: its new requests count there; old rows keep their team
    moved = await http.patch(f"{url}/admin/keys/{b['id']}", headers=auth(), json={"team": "ops"})
    assert moved.json()["team"] == "ops"
    unknown = await http.patch(f"{url}/admin/keys/{b['id']}", headers=auth(),
                               json={"team": "nope"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "team_not_found")
    busy = await http.delete(f"{teams_url}/eng", headers=auth())
    assert (busy.status_code, busy.json()["error"]["code"]) == (409, "team_has_keys")
    await http.delete(f"{url}/admin/keys/{a['id']}", headers=auth())  # revoked: not active
    still = await http.delete(f"{teams_url}/eng", headers=auth())  # a revoked key names it
    assert (still.status_code, still.json()["error"]["code"]) == (409, "team_has_keys")
    assert '{"team": ""}' in still.json()["error"]["message"]
    cleared = await http.patch(f"{url}/admin/keys/{a['id']}", headers=auth(), json={"team": ""})
    assert cleared.json()["team"] == ""
    gone = await http.delete(f"{teams_url}/eng", headers=auth())
    assert gone.json() == {"object": "team.deleted", "id": "eng", "deleted": True}
    assert (await http.get(f"{teams_url}/eng", headers=auth())).status_code == 404

    # every team change, refused ones included, is in the audit log
    audit = (await http.get(f"{url}/admin/audit?target=eng", headers=auth())).json()["data"]
    assert [(e["action"], e["outcome"]) for e in audit] == [
        ("team.delete", "ok"), ("team.delete", "refused"), ("team.delete", "refused"),
        ("team.create", "ok")]
    assert audit[0]["changes"]["monthly_budget_usd"] == {"from": 0.25, "to": None}
    assert audit[3]["changes"]["description"] == {"from": None, "to": "Engineering"}
    created = (await http.get(f"{url}/admin/audit?action=team.create",
                              headers=auth())).json()["data"]
    assert [(e["target"], e["outcome"]) for e in created] == [
        ("ops", "ok"), ("", "refused"), ("", "refused"), ("eng", "ok")]
    assert "`eng`" in created[2]["changes"]["error"]  # the duplicate; [1] is the bad id
    updated = (await http.get(f"{url}/admin/audit?action=team.update",
                              headers=auth())).json()["data"]
    assert [(e["target"], e["changes"]) for e in updated] == [
        ("ops", {"description": {"from": "", "to": "Operations"},
                 "rpm_limit": {"from": None, "to": 100}})]


async def test_a_team_changed_by_one_gateway_reaches_another_through_the_keys_version(
        tmp_path: Path) -> None:
    stores = [await SqliteStore.open(tmp_path / "ailb.db") for _ in range(2)]
    here, there = [await KeyRegistry.load(s, lambda: WHEN) for s in stores]
    async with trio.open_nursery() as nursery:
        await nursery.start(there.refresh_forever, 0.01)
        await here.create_team({"id": "eng", "rpm_limit": 5})
        with trio.fail_after(5):
            while there.teams.get("eng") is None:
                await trio.sleep(0.01)
        assert there.teams.require("eng").rpm_limit == 5
        await here.delete_team("eng")
        with trio.fail_after(5):
            while there.teams.get("eng") is not None:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    for store in stores:
        await store.aclose()


async def test_a_request_without_max_tokens_fits_its_teams_tpm(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway()).http_url
    assert (await _team_call(http, "POST", f"{url}/admin/teams", id="small",
                             tpm_limit=50)).status_code == 201
    key = (await create_key(http, url, team="small"))["key"]
    answer = await http.post(f"{url}/v1/chat/completions", headers=auth(key), json={
        "model": "echo-1", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text  # the default ceiling, lowered to fit 50


async def test_the_registry_checks_a_keys_team_under_its_lock(tmp_path: Path) -> None:
    """Every door (admin API, ``ailb keys --local``) goes through the registry: a key never
    lands in a team that does not exist, even one deleted while the key was being written, and
    a revoked key cannot be made active again in a deleted team."""
    store = await SqliteStore.open(tmp_path / "ailb.db")
    try:
        registry = await KeyRegistry.load(store, lambda: datetime.now(UTC))
        with pytest.raises(InvalidRequest, match="team"):
            await registry.create({"name": "k", "team": "nope"})
        await registry.create_team({"id": "t"})
        await registry.create_team({"id": "u"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(registry.delete_team, "t")
            await trio.testing.wait_all_tasks_blocked()  # the delete holds the lock (store I/O)
            with pytest.raises(InvalidRequest, match="`t`"):
                await registry.create({"name": "late", "team": "t"})
        assert registry.teams.get("t") is None
        assert [k.name for k in registry.all()] == []

        key, _ = await registry.create({"name": "k", "team": "u"})
        await registry.revoke(key.id)
        await registry.update(key.id, {"owner": "ops"})  # not activating: no team check
        with pytest.raises(GatewayError) as refused:  # a revoked key still names the team
            await registry.delete_team("u")
        assert refused.value.code == "team_has_keys"
        await registry.update(key.id, {"team": ""})
        await registry.delete_team("u")
        with pytest.raises(InvalidRequest, match="`gone`"):
            await registry.update(key.id, {"team": "gone"})
    finally:
        await store.aclose()


async def test_a_revoked_key_in_a_deleted_team_is_not_made_active_again(
        tmp_path: Path) -> None:
    """A key left naming a team that no longer exists (written before teams were records, or
    by another gateway's YAML) cannot be reactivated into it."""
    store = await SqliteStore.open(tmp_path / "ailb.db")
    try:
        registry = await KeyRegistry.load(store, lambda: datetime.now(UTC))
        await store.put_key(replace(_key("k1", team="old"), active=False))
        registry = await KeyRegistry.load(store, lambda: datetime.now(UTC))
        with pytest.raises(InvalidRequest, match="`old`"):
            await registry.update("k1", {"active": True})
        assert registry.require("k1").active is False
        moved = await registry.update("k1", {"active": True, "team": ""})
        assert moved.active and moved.team == ""
    finally:
        await store.aclose()
