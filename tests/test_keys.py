"""Virtual keys: the admin API, auth, per-key limits and budgets under concurrency, restarts,
month rollover, streams charged on disconnect."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

from ailb.config.parse import parse_mapping
from ailb.keys.records import KeyRecord
from ailb.keys.store import SqliteStore
from ailb.supervisor import Running, run
from tests.conftest import SDKFactory, StartGateway, auth, in_thread, make_settings

# "hi" through echo: 7 prompt tokens (estimated and counted alike) and, with max_tokens 1, one
# completion token; at 12,500 USD per million tokens each way, exactly $0.10 a request, worst
# case and actual.
PRICED = {"prices": {"echo-1": {"input_per_mtok": 12500, "output_per_mtok": 12500}}}
HI = {"model": "echo-1", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}


async def create_key(http: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    response = await http.post(f"{url}/admin/keys", headers=auth(),
                               json={"name": "test", **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def chat(http: httpx.AsyncClient, url: str, key: str, **body: Any) -> httpx.Response:
    return await http.post(f"{url}/v1/chat/completions", headers=auth(key), json={**HI, **body})


async def test_admin_api(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway()).http_url
    unknown = await http.post(f"{url}/admin/keys", headers=auth(),
                              json={"name": "x", "team": "search"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "team_not_found")
    assert (await http.post(f"{url}/admin/teams", headers=auth(),
                            json={"id": "search"})).status_code == 201
    created = await create_key(http, url, owner="ana", team="search",
                               allowed_models=["echo-*"], rpm_limit=100,
                               expires_at="2999-01-01T00:00:00Z", metadata={"cost_center": 7})
    key, key_id = created["key"], created["id"]
    assert key.startswith(f"sk-ailb-{key_id}-")
    listed = (await http.get(f"{url}/admin/keys", headers=auth())).json()["data"]
    assert [k["id"] for k in listed] == [key_id]
    assert "key" not in listed[0] and "secret_hash" not in listed[0]
    got = (await http.get(f"{url}/admin/keys/{key_id}", headers=auth())).json()
    assert (got["owner"], got["team"], got["rpm_limit"]) == ("ana", "search", 100)
    patched = await http.patch(f"{url}/admin/keys/{key_id}", headers=auth(),
                               json={"monthly_budget_usd": 5, "rpm_limit": None})
    assert (patched.json()["monthly_budget_usd"], patched.json()["rpm_limit"]) == (5.0, None)
    bad = await http.patch(f"{url}/admin/keys/{key_id}", headers=auth(), json={"rpm": 3})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "rpm")
    bad = await http.post(f"{url}/admin/keys", headers=auth(), json={"name": "x",
                                                                    "tpm_limit": -1})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "tpm_limit")
    assert (await http.get(f"{url}/admin/keys", headers=auth(key))).status_code == 403
    assert (await http.get(f"{url}/admin/keys")).status_code == 401
    assert (await http.get(f"{url}/admin/keys/nope", headers=auth())).status_code == 404

    assert (await chat(http, url, key)).status_code == 200
    rotated = (await http.post(f"{url}/admin/keys/{key_id}/rotate", headers=auth())).json()
    assert rotated["id"] == key_id and rotated["key"] != key
    assert (await chat(http, url, key)).status_code == 401
    assert (await chat(http, url, rotated["key"])).status_code == 200
    await http.delete(f"{url}/admin/keys/{key_id}", headers=auth())
    revoked = await chat(http, url, rotated["key"])
    assert (revoked.status_code, revoked.json()["error"]["code"]) == (401, "key_revoked")


async def test_sdk_error_classes(start_gateway: StartGateway, http: httpx.AsyncClient,
                                 sdk: SDKFactory) -> None:
    url = (await start_gateway(**PRICED)).http_url
    limited = (await create_key(http, url, allowed_models=["other-*"]))["key"]
    expired = (await create_key(http, url, expires_at="2001-01-01T00:00:00Z"))["key"]
    broke = (await create_key(http, url, monthly_budget_usd=0.05))["key"]
    messages = HI["messages"]
    with pytest.raises(openai.AuthenticationError):
        await in_thread(lambda: sdk(url, "sk-ailb-000000000000-" + "x" * 40).chat.completions
                        .create(model="echo-1", messages=messages))
    with pytest.raises(openai.AuthenticationError) as info:
        await in_thread(lambda: sdk(url, expired).chat.completions.create(
            model="echo-1", messages=messages))
    assert info.value.code == "key_expired"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await in_thread(lambda: sdk(url, limited).chat.completions.create(
            model="echo-1", messages=messages))
    assert denied.value.code == "model_not_allowed"
    with pytest.raises(openai.APIStatusError) as poor:
        await in_thread(lambda: sdk(url, broke).chat.completions.create(
            model="echo-1", messages=messages, max_tokens=1))
    assert poor.value.status_code == 402
    assert poor.value.code == "budget_exceeded"
    assert poor.value.response.headers["x-should-retry"] == "false"


async def test_sdk_honours_retry_after(start_gateway: StartGateway, http: httpx.AsyncClient,
                                       sdk: SDKFactory) -> None:
    url = (await start_gateway()).http_url
    key = (await create_key(http, url, rpm_limit=60))["key"]  # one request back per second
    answers = [await chat(http, url, key) for _ in range(61)]
    assert [r.status_code for r in answers].count(429) == 1
    limited = answers[-1]
    assert limited.json()["error"]["code"] == "rpm_limit_exceeded"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert 0 < int(limited.headers["retry-after-ms"]) <= 1000
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=3, timeout=10)
    try:
        done = await in_thread(lambda: client.chat.completions.create(
            model="echo-1", messages=HI["messages"], max_tokens=1))
    finally:
        client.close()
    assert done.choices[0].message.content == "hi"  # the SDK waited and retried


async def test_rate_limit_headers(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway(**PRICED)).http_url
    key = (await create_key(http, url, rpm_limit=600, tpm_limit=100_000,
                            monthly_budget_usd=1))["key"]
    response = await chat(http, url, key)
    h = response.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == \
        ("600", "599")
    assert h["x-ratelimit-limit-tokens"] == "100000"
    assert int(h["x-ratelimit-remaining-tokens"]) == 100_000 - 8
    assert h["x-ratelimit-reset-requests"] in {"100ms", "99ms", "101ms"}
    assert h["x-ratelimit-reset-tokens"].endswith("ms")
    assert float(h["x-ailb-key-spend"]) == pytest.approx(0.10)
    assert float(h["x-ailb-budget-remaining"]) == pytest.approx(0.90)


async def test_budget_holds_with_100_in_flight(start_gateway: StartGateway,
                                               http: httpx.AsyncClient) -> None:
    url = (await start_gateway(**PRICED)).http_url
    created = await create_key(http, url, monthly_budget_usd=1.0)  # covers exactly 10
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await chat(http, url, created["key"])).status_code)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as many:
        http = many
        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(one)
        usage = (await http.get(f"{url}/admin/keys/{created['id']}/usage",
                                headers=auth())).json()
    assert statuses.count(200) == 10 and statuses.count(402) == 90
    assert usage["spend_usd"] == pytest.approx(1.0) and usage["spend_usd"] <= 1.0 + 1e-9
    assert usage["budget_remaining_usd"] == pytest.approx(0.0)


@pytest.mark.parametrize(("limit", "allowed"), [({"rpm_limit": 5}, 5),
                                                ({"tpm_limit": 100}, 12),
                                                ({"max_parallel_requests": 3}, 3)])
async def test_limits_hold_under_concurrency(start_gateway: StartGateway,
                                             http: httpx.AsyncClient, limit: dict[str, int],
                                             allowed: int) -> None:
    url = (await start_gateway(**PRICED)).http_url
    key = (await create_key(http, url, **limit))["key"]
    statuses: list[int] = []
    codes: list[str] = []

    async def one() -> None:
        response = await chat(http, url, key)
        statuses.append(response.status_code)
        if response.status_code == 429:
            codes.append(response.json()["error"]["code"])

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50)) as many:
        http = many
        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(one)
    if "max_parallel_requests" in limit:
        assert statuses.count(200) >= allowed  # parallel slots free up as requests finish
    else:
        assert statuses.count(200) == allowed
    assert statuses.count(200) + statuses.count(429) == 30
    assert set(codes) <= {"rpm_limit_exceeded", "tpm_limit_exceeded", "parallel_limit_exceeded"}


async def test_restart_keeps_keys_spend_and_limits(nursery: trio.Nursery,
                                                   tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **PRICED)
    async with httpx.AsyncClient() as http:
        async with trio.open_nursery() as first_life:
            running: Running = await first_life.start(run, settings)
            created = await create_key(http, running.http_url, monthly_budget_usd=0.35,
                                       rpm_limit=50)
            for _ in range(3):
                assert (await chat(http, running.http_url, created["key"])).status_code == 200
            running.request_shutdown()
        async with trio.open_nursery() as second_life:
            running = await second_life.start(run, settings)
            again = await chat(http, running.http_url, created["key"])
            assert again.status_code == 402  # 0.30 spent of 0.35: the next $0.10 does not fit
            usage = (await http.get(f"{running.http_url}/admin/keys/{created['id']}/usage",
                                    headers=auth())).json()
            assert usage["spend_usd"] == pytest.approx(0.30)
            assert usage["requests"] == 3  # the ledger was flushed at shutdown
            got = (await http.get(f"{running.http_url}/admin/keys/{created['id']}",
                                  headers=auth())).json()
            assert got["rpm_limit"] == 50
            running.request_shutdown()


async def test_month_rollover(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    now = [datetime(2026, 11, 30, 23, 59, 50, tzinfo=UTC)]
    url = (await start_gateway(wall_clock=lambda: now[0], **PRICED)).http_url
    created = await create_key(http, url, monthly_budget_usd=0.2)
    assert [(await chat(http, url, created["key"])).status_code for _ in range(3)] == \
        [200, 200, 402]
    now[0] = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)  # a new month starts at zero by itself
    assert (await chat(http, url, created["key"])).status_code == 200
    usage = (await http.get(f"{url}/admin/keys/{created['id']}/usage", headers=auth())).json()
    assert (usage["period"], usage["spend_usd"]) == ("2026-12", pytest.approx(0.1))


def test_yaml_keys_need_their_secret_in_the_environment() -> None:
    key = "sk-ailb-0123456789ab-" + "s" * 30
    settings = parse_mapping({"keys": [{"key_env": "TEAM_KEY", "name": "team", "rpm_limit": 9}]},
                             {"TEAM_KEY": key})
    assert settings.keys[0].id == "0123456789ab"
    assert settings.keys[0].fields["rpm_limit"] == 9
    from ailb.errors import ConfigError
    with pytest.raises(ConfigError) as info:
        parse_mapping({"keys": [{"key_env": "MISSING", "name": "t"}]}, {})
    assert info.value.key == "keys[0].key_env"


async def test_yaml_declared_key_works(start_gateway: StartGateway,
                                       http: httpx.AsyncClient) -> None:
    key = "sk-ailb-0123456789ab-" + "s" * 30
    declared = [{"key_env": "TEAM_KEY", "name": "team", "allowed_models": ["echo-1"]}]
    url = (await start_gateway(environ={"TEAM_KEY": key}, keys=declared)).http_url
    assert (await chat(http, url, key)).status_code == 200
    locked = await http.patch(f"{url}/admin/keys/0123456789ab", headers=auth(),
                              json={"rpm_limit": 1})
    assert locked.status_code == 400 and locked.json()["error"]["code"] == \
        "key_managed_by_config"


@pytest.mark.parametrize("ending", ["client_leaves", "upstream_cuts"])
async def test_streams_are_charged_when_they_end_early(
    nursery: trio.Nursery, start_gateway: StartGateway, http: httpx.AsyncClient, ending: str
) -> None:
    from tests.fakes.openai_upstream import FakeOpenAI, start_fake

    fake = FakeOpenAI(reply="word " * 40)
    fake.chunk_delay_s = 0.02
    if ending == "upstream_cuts":
        fake.cut_after_chunks = 6
    base = await start_fake(nursery, fake)
    running = await start_gateway(
        deployments=[{"name": "up", "type": "openai", "base_url": base, "models": ["m"]}],
        prices={"m": {"input_per_mtok": 10_000, "output_per_mtok": 10_000}},
        accounting={"ledger_flush_s": 0.05})
    url = running.http_url
    created = await create_key(http, url, monthly_budget_usd=100)
    body = {"model": "m", "stream": True, "max_tokens": 1000,
            "messages": [{"role": "user", "content": "hi"}]}
    async with http.stream("POST", f"{url}/v1/chat/completions", headers=auth(created["key"]),
                           json=body) as response:
        seen = 0
        async for line in response.aiter_lines():
            seen += line.startswith("data: ")
            if ending == "client_leaves" and seen == 4:
                break
    with trio.fail_after(5):
        while True:
            usage = (await http.get(f"{url}/admin/keys/{created['id']}/usage",
                                    headers=auth())).json()
            if usage["requests"]:
                break
            await trio.sleep(0.05)
    row = usage["by_day_and_model"][0]
    assert row["completion_tokens"] >= 3  # the chunks relayed before the end, ~1 token each
    assert row["completion_tokens"] < 40
    # charged for what was served, not for the 1000-token reservation
    assert usage["spend_usd"] == pytest.approx(row["cost_usd"])
    assert 0 < usage["spend_usd"] < (row["prompt_tokens"] + 1000) * 0.01
    assert running.services.drain.in_flight == 0


async def test_refusals_carry_the_rate_limit_headers(start_gateway: StartGateway,
                                                     http: httpx.AsyncClient) -> None:
    url = (await start_gateway(**PRICED)).http_url
    key = (await create_key(http, url, rpm_limit=1, monthly_budget_usd=5))["key"]
    assert (await chat(http, url, key)).status_code == 200
    refused = await chat(http, url, key)
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit-requests"] == "1"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert float(refused.headers["x-ailb-budget-remaining"]) == pytest.approx(4.9)


async def test_a_limited_key_cannot_outspend_its_reservation(
    nursery: trio.Nursery, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    from tests.fakes.openai_upstream import FakeOpenAI, start_fake

    fake = FakeOpenAI()
    base = await start_fake(nursery, fake)
    url = (await start_gateway(
        deployments=[{"name": "up", "type": "openai", "base_url": base, "models": ["m", "o3"]}],
        accounting={"default_max_tokens": 300})).http_url
    key = (await create_key(http, url, monthly_budget_usd=100))["key"]
    for model, field in (("m", "max_tokens"), ("o3", "max_completion_tokens")):
        assert (await http.post(f"{url}/v1/chat/completions", headers=auth(key), json={
            "model": model, "messages": [{"role": "user", "content": "hi"}]})).status_code == 200
        assert fake.requests[-1].body[field] == 300  # the reserved ceiling, sent upstream
    # n choices reserve n times the completion ceiling
    limited = (await create_key(http, url, tpm_limit=100_000))["key"]
    four = await http.post(f"{url}/v1/chat/completions", headers=auth(limited), json={
        "model": "m", "n": 4, "max_tokens": 300, "messages": [{"role": "user", "content": "x"}]})
    # reserved at admission: 7 prompt tokens (estimate) + 4 x 300
    assert int(four.headers["x-ratelimit-remaining-tokens"]) == 100_000 - 7 - 1200


async def test_a_call_the_client_abandons_is_still_charged_its_prompt(
    nursery: trio.Nursery, start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    from tests.fakes.openai_upstream import FakeOpenAI, start_fake

    fake = FakeOpenAI()
    fake.hang = True
    base = await start_fake(nursery, fake)
    running = await start_gateway(
        deployments=[{"name": "up", "type": "openai", "base_url": base, "models": ["m"]}],
        prices={"m": {"input_per_mtok": 10_000, "output_per_mtok": 10_000}},
        accounting={"ledger_flush_s": 0.05})
    created = await create_key(http, running.http_url, monthly_budget_usd=100)

    async def call() -> None:
        await http.post(f"{running.http_url}/v1/chat/completions",
                        headers=auth(created["key"]),
                        json={"model": "m", "max_tokens": 100,
                              "messages": [{"role": "user", "content": "x" * 400}]})

    async with trio.open_nursery() as client:
        client.start_soon(call)
        with trio.fail_after(5):  # the upstream is working on the call...
            while not any(r.path.endswith("/chat/completions") for r in fake.requests):
                await trio.sleep(0.01)
        client.cancel_scope.cancel()  # ...when the client gives up on it
    with trio.fail_after(5):
        while True:
            usage = (await http.get(f"{running.http_url}/admin/keys/{created['id']}/usage",
                                    headers=auth())).json()
            if usage["requests"]:
                break
            await trio.sleep(0.05)
    row = usage["by_day_and_model"][0]
    assert row["prompt_tokens"] > 100 and row["completion_tokens"] == 0
    assert usage["spend_usd"] == pytest.approx(row["prompt_tokens"] * 0.01)


@pytest.mark.parametrize("field, value", [
    ("tpm_limit", 2**63), ("rpm_limit", 0), ("max_parallel_requests", 2**53 + 1),
    ("monthly_budget_usd", 1e16), ("monthly_budget_usd", -1),
    ("monthly_budget_usd", float("nan")), ("monthly_budget_usd", float("inf"))])
async def test_limits_out_of_range_are_400_naming_the_field(
        start_gateway: StartGateway, field: str, value: float) -> None:
    url = (await start_gateway()).http_url
    async with httpx.AsyncClient() as http:  # Python's json writes NaN/Infinity literals
        reply = await http.post(f"{url}/admin/keys", headers={**auth(), "content-type":
                                                               "application/json"},
                                content=json.dumps({"name": "x", field: value}))
    assert reply.status_code == 400, reply.text
    if value == value and abs(value) != float("inf"):  # NaN and Infinity are not JSON at all
        assert reply.json()["error"]["param"] == field


async def test_the_key_store_and_its_wal_are_the_owners_only(tmp_path: Path) -> None:
    old = tmp_path / "older"
    old.mkdir()
    (old / "ailb.db").touch(mode=0o644)  # made by an older version
    for folder in (tmp_path / "fresh", old):
        store = await SqliteStore.open(folder / "ailb.db")
        await store.put_key(KeyRecord(id="k", name="", secret_hash="h",
                                      created_at=datetime(2026, 12, 6, tzinfo=UTC)))
        files = sorted(folder.glob("ailb.db*"))
        assert {f.name for f in files} >= {"ailb.db", "ailb.db-wal", "ailb.db-shm"}
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in files), \
            {f.name: oct(f.stat().st_mode & 0o777) for f in files}
        await store.aclose()
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o700
