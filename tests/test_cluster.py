"""The guarantees across instances (README, "Scaling out"), each proven with three AILB
processes on real PostgreSQL and Valkey servers (on loopback, from their pip wheels), driven
over HTTP and with the official OpenAI SDK:

* a budget is never exceeded under 3 x 100 parallel requests, JSON and streams, including
  streams abandoned by their clients;
* an RPM limit admits exactly its number across instances; TPM never passes its limit by more
  than one request's reservation;
* a key created, changed or revoked on one instance is honoured by all within 1 s;
* a deployment cooled down after a 429 on one instance is avoided by the others;
* SIGKILL of one instance under load loses no served request's spend, nor the ledger row of an
  answered request;
* the outage policy: PostgreSQL down -> virtual keys 503 with Retry-After and /readyz 503,
  Valkey down -> rate limits on each instance's share; both recover without a restart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

from tests.cluster import MODEL, Instance, cluster, create_key, until, usage
from tests.conftest import auth, in_thread
from tests.fakes.openai_upstream import FakeOpenAI, start_fake

USD_PER_TOKEN = 0.00001  # $10 per Mtok in and out
PRICES = {"prices": {MODEL: {"input_per_mtok": 10, "output_per_mtok": 10}}}
BODY = {"model": MODEL, "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def upstream(nursery: trio.Nursery) -> tuple[FakeOpenAI, str]:
    app = FakeOpenAI()
    return app, await start_fake(nursery, app)


@pytest.fixture(params=["postgres", "postgres+valkey"])
def shared(request: pytest.FixtureRequest, postgres_url: str) -> dict[str, str]:
    """The environment of instances sharing a fresh PostgreSQL database, and a Valkey."""
    env = {"DATABASE_URL": postgres_url}
    if request.param == "postgres+valkey":
        env["REDIS_URL"] = request.getfixturevalue("valkey_url")
    return env


@pytest.fixture
def both(postgres_url: str, valkey_url: str) -> dict[str, str]:
    return {"DATABASE_URL": postgres_url, "REDIS_URL": valkey_url}


async def post(http: httpx.AsyncClient, instance: Instance, key: str,
               stream: bool = False, abandon: bool = False, **extra: Any) -> int:
    """One chat request; a stream is read to its end, or left after its first chunk."""
    body = {**BODY, **extra, "stream": stream}
    async with http.stream("POST", f"{instance.url}/v1/chat/completions", json=body,
                           headers=auth(key)) as reply:
        if reply.status_code != 200 or not stream:
            await reply.aread()
            return reply.status_code
        async for _ in reply.aiter_bytes():
            if abandon:
                return 499  # the client leaves: the body is closed with the block
    return reply.status_code


async def test_budget_holds_under_3x100_parallel_requests(
        tmp_path: Path, upstream: tuple[FakeOpenAI, str], shared: dict[str, str]) -> None:
    app, base = upstream
    app.chunk_delay_s = 0.005
    budget = 0.02
    async with cluster(tmp_path, 3, base, env=shared, **PRICES) as instances, \
            httpx.AsyncClient(timeout=30) as http:
        key = await create_key(http, instances[0], monthly_budget_usd=budget)
        await trio.sleep(0.6)  # the others see the key
        outcomes: list[int] = []

        async def one(i: int) -> None:
            kind = i % 3  # JSON, a stream read to its end, a stream abandoned
            outcomes.append(await post(http, instances[i % 3], key["key"], stream=kind > 0,
                                       abandon=kind == 2))

        async with trio.open_nursery() as nursery:
            for i in range(300):
                nursery.start_soon(one, i)
        assert outcomes.count(402) > 0  # the budget was binding
        assert outcomes.count(200) + outcomes.count(499) > 10
        await trio.sleep(1)  # abandoned streams settle
        seen = [await usage(http, i, key["id"]) for i in instances]
        assert all(s["spend_usd"] <= budget + 1e-9 for s in seen)
        # every reservation was settled (abandoned streams too): spend = the ledger's costs
        ledger = sum(row["cost_usd"] for row in seen[0]["by_day_and_model"])
        assert seen[0]["spend_usd"] == pytest.approx(ledger, abs=1e-6)
        assert seen[0]["requests"] == outcomes.count(200) + outcomes.count(499)


async def test_rpm_exact_and_tpm_within_one_reservation(
        tmp_path: Path, upstream: tuple[FakeOpenAI, str], shared: dict[str, str]) -> None:
    app, base = upstream
    app.reply = "word " * 100  # every answer uses all of its max_tokens (40)
    async with cluster(tmp_path, 3, base, env=shared) as instances, \
            httpx.AsyncClient(timeout=30) as http:
        rpm_key = await create_key(http, instances[0], rpm_limit=30)
        tpm_key = await create_key(http, instances[1], tpm_limit=2000)
        await trio.sleep(0.6)
        for key, limit, per_minute in ((rpm_key, 30, 30), (tpm_key, 2000, 2000)):
            codes: list[int] = []

            async def one(i: int, key: dict[str, Any] = key, codes: list[int] = codes) -> None:
                codes.append(await post(http, instances[i % 3], key["key"]))

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for i in range(120):
                    nursery.start_soon(one, i)
            refill = (trio.current_time() - start) * per_minute / 60  # the buckets refill
            admitted = codes.count(200)
            assert codes.count(429) == 120 - admitted
            if key is rpm_key:
                assert 30 <= admitted <= 30 + math.floor(refill)
            else:  # tokens used (a request gives back what it did not use when it ends)
                rows = (await usage(http, instances[2], key["id"]))["by_day_and_model"]
                used = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
                reservation = 40 + 20  # max_tokens + the prompt estimate, at most
                assert used <= limit + reservation + refill
                assert admitted >= limit // reservation  # and the limit was usable


async def test_key_changes_reach_every_instance_within_1s(
        tmp_path: Path, upstream: tuple[FakeOpenAI, str], both: dict[str, str],
        sdk: Any) -> None:
    _, base = upstream
    async with cluster(tmp_path, 3, base, env=both) as instances, \
            httpx.AsyncClient(timeout=10) as http:
        key = await create_key(http, instances[0])
        clients = [sdk(i.url, key["key"]) for i in instances]

        async def all_answer(expect: int) -> bool:
            for client in clients:
                try:
                    await in_thread(lambda c=client: c.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "hi"}]))
                    status = 200
                except openai.APIStatusError as exc:
                    status = exc.status_code
                if status != expect:
                    return False
            return True

        assert await until(lambda: all_answer(200), 1.0) < 1.0  # created on one: live on all
        changed = await http.patch(f"{instances[1].url}/admin/keys/{key['id']}", headers=auth(),
                                   json={"allowed_models": ["other-model"]})
        assert changed.status_code == 200, changed.text
        assert await until(lambda: all_answer(403), 1.0) < 1.0
        revoked = await http.delete(f"{instances[2].url}/admin/keys/{key['id']}",
                                    headers=auth())
        assert revoked.status_code == 200, revoked.text
        assert await until(lambda: all_answer(401), 1.0) < 1.0


async def test_sigkill_of_one_instance_loses_no_spend_and_no_answered_row(
        tmp_path: Path, upstream: tuple[FakeOpenAI, str], both: dict[str, str]) -> None:
    _, base = upstream
    served = 0
    async with cluster(tmp_path, 3, base, env=both, **PRICES) as instances, \
            httpx.AsyncClient(timeout=10) as http:
        key = await create_key(http, instances[0], monthly_budget_usd=1000)
        await trio.sleep(0.6)
        stop = trio.Event()

        async def client(i: int) -> None:
            nonlocal served
            while not stop.is_set():
                try:
                    status = await post(http, instances[i % 3], key["key"], stream=i % 2 == 1)
                except httpx.HTTPError:
                    if i % 3 == 0:
                        return  # the killed instance
                    raise
                served += status == 200

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(client, i)
            await trio.sleep(1.5)
            instances[0].kill()
            await trio.sleep(0.5)
            stop.set()
        assert served > 30
        await trio.sleep(1)
        seen = await usage(http, instances[1], key["id"])
        assert seen["requests"] >= served  # every answered request has its row
        cost = seen["spend_usd"]
        assert cost >= sum(row["cost_usd"] for row in seen["by_day_and_model"]) - 1e-9


async def test_a_cooldown_after_429_on_one_instance_is_avoided_by_the_others(
        tmp_path: Path, nursery: trio.Nursery, both: dict[str, str]) -> None:
    a, b = FakeOpenAI(reply="from a"), FakeOpenAI(reply="from b")
    a_url, b_url = await start_fake(nursery, a), await start_fake(nursery, b)
    deployments = [{"name": "a", "type": "openai", "base_url": a_url, "models": [MODEL],
                    "priority": 0},
                   {"name": "b", "type": "openai", "base_url": b_url, "models": [MODEL],
                    "priority": 1}]
    async with cluster(tmp_path, 3, a_url, env=both, OPENAI_API_KEY="",
                       OPENAI_BASE_URL="https://api.openai.com/v1", deployments=deployments,
                       ROUTING_STRATEGY="failover") as instances, \
            httpx.AsyncClient(timeout=10) as http:
        a.status, a.retry_after = 429, 30  # a rate-limits the first instance's call
        first = await http.post(f"{instances[0].url}/v1/chat/completions", json=BODY,
                                headers=auth())
        assert first.status_code == 200 and first.headers["x-ailb-deployment"] == "b"
        a.status = None  # a would answer now: only the shared cooldown keeps the others off
        calls_to_a = len(a.requests)
        await trio.sleep(1)  # the others pick the cooldown up (every 0.25 s)
        for instance in instances[1:]:
            for _ in range(3):
                reply = await http.post(f"{instance.url}/v1/chat/completions", json=BODY,
                                        headers=auth())
                assert reply.status_code == 200
                assert reply.headers["x-ailb-deployment"] == "b"
        assert len(a.requests) == calls_to_a  # never called: avoided, not tried and failed


async def test_postgres_outage_fails_budgets_closed_and_recovers_without_restart(
        tmp_path: Path, upstream: tuple[FakeOpenAI, str], postgres_server: Any,
        postgres_url: str, valkey_url: str) -> None:
    _, base = upstream
    env = {"DATABASE_URL": postgres_url, "REDIS_URL": valkey_url}
    async with cluster(tmp_path, 2, base, env=env) as instances, \
            httpx.AsyncClient(timeout=15) as http:
        key = await create_key(http, instances[0], monthly_budget_usd=10)
        await trio.sleep(0.6)
        assert await post(http, instances[1], key["key"]) == 200
        postgres_server.stop()
        try:
            codes = await burst(http, instances, key["key"], 20)
            assert set(codes) == {503}  # budgets fail closed, never admitted on a guess
            refused = await http.post(f"{instances[0].url}/v1/chat/completions", json=BODY,
                                      headers=auth(key["key"]))
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert refused.json()["error"]["code"] == "key_store_unavailable"
            # the admin key needs no store
            assert (await http.post(f"{instances[0].url}/v1/chat/completions", json=BODY,
                                    headers=auth())).status_code == 200
            ready = await http.get(f"{instances[1].url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["shared_state"]["store"]["up"] is False
            health = (await http.get(f"{instances[1].url}/healthz")).json()
            assert health["status"] == "degraded"
            metrics = (await http.get(f"{instances[1].url}/metrics")).text
            assert 'ailb_shared_state_up{part="store"} 0.0' in metrics
        finally:
            postgres_server.start()

        async def recovered() -> bool:
            codes = [(await http.get(f"{i.url}/readyz")).status_code for i in instances]
            return codes == [200] * len(instances)

        await until(recovered, 30)
        assert await post(http, instances[0], key["key"]) == 200
        assert await post(http, instances[1], key["key"]) == 200


async def burst(http: httpx.AsyncClient, instances: list[Instance], key: str,
                count: int) -> list[int]:
    """``count`` requests at once, spread over ``instances``: their statuses."""
    codes: list[int] = []

    async def one(i: int) -> None:
        codes.append(await post(http, instances[i % len(instances)], key))

    async with trio.open_nursery() as load:
        for i in range(count):
            load.start_soon(one, i)
    return codes


async def test_valkey_outage_falls_back_to_each_instances_share_and_recovers(
        tmp_path: Path, upstream: tuple[FakeOpenAI, str], postgres_url: str,
        valkey: Any) -> None:
    _, base = upstream
    env = {"DATABASE_URL": postgres_url, "REDIS_URL": valkey.url}
    async with cluster(tmp_path, 2, base, env=env, shared={"instances": 2}) as instances, \
            httpx.AsyncClient(timeout=15) as http:
        key = await create_key(http, instances[0], rpm_limit=20)
        await trio.sleep(0.6)
        assert await post(http, instances[0], key["key"]) == 200
        valkey.stop()
        try:
            codes = await burst(http, instances, key["key"], 40)
            # each of the two instances admits its share: 20 / 2 = 10
            assert codes.count(200) == 20 and codes.count(429) == 20
            health = (await http.get(f"{instances[0].url}/healthz")).json()
            assert health["shared_state"]["counters"]["up"] is False
            assert (await http.get(f"{instances[0].url}/readyz")).status_code == 200
            metrics = (await http.get(f"{instances[0].url}/metrics")).text
            assert 'ailb_rate_limit_fallbacks_total{policy="share"}' in metrics
        finally:
            valkey.start()

        async def recovered() -> bool:
            report = (await http.get(f"{instances[1].url}/healthz")).json()
            return bool(report["shared_state"]["counters"]["up"])

        await until(recovered, 30)
        # the shared counters again: a fresh bucket of 20 (Valkey restarted empty), across both
        codes = await burst(http, instances, key["key"], 40)
        assert codes.count(200) == 20
