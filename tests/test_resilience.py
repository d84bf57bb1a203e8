"""Fault injection against real fake upstreams: deployments that die, hang, fail, rate-limit,
cut streams or are slow. While one deployment is healthy, clients see no error."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import StartGateway, auth
from tests.fakes.openai_upstream import FakeOpenAI, start_fake

MSGS = [{"role": "user", "content": "hello"}]


def chats(fake: FakeOpenAI) -> list[Any]:
    """The chat requests a fake received (health probes left out)."""
    return [r for r in fake.requests if r.path.endswith("/chat/completions")]


class Pair:
    def __init__(self, url: str, a: FakeOpenAI, b: FakeOpenAI, a_base: str) -> None:
        self.url, self.a, self.b, self.a_base = url, a, b, a_base

    async def chat(self, http: httpx.AsyncClient, stream: bool = False,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        return await http.post(f"{self.url}/v1/chat/completions",
                               headers={**auth(), **(headers or {})},
                               json={"model": "m", "messages": MSGS, "stream": stream})

    async def stats(self, http: httpx.AsyncClient) -> dict[str, Any]:
        answer: dict[str, Any] = (await http.get(f"{self.url}/api/routing/stats",
                                                 headers=auth())).json()
        return answer


async def pair(nursery: trio.Nursery, start_gateway: StartGateway, strategy: str = "failover",
               a_extra: dict[str, Any] | None = None, **raw: Any) -> Pair:
    a, b = FakeOpenAI(reply="from a"), FakeOpenAI(reply="from b")
    a_base, b_base = await start_fake(nursery, a), await start_fake(nursery, b)
    raw.setdefault("routing", {})
    raw["routing"] = {"cooldown_s": 0.5, "failures_to_cooldown": 2, **raw["routing"]}
    raw.setdefault("health", {"interval_s": 30, "timeout_s": 1, "jitter": 0})
    running = await start_gateway(
        deployments=[{"name": "a", "type": "openai", "base_url": a_base, "models": ["m"],
                      "priority": 0, **(a_extra or {})},
                     {"name": "b", "type": "openai", "base_url": b_base, "models": ["m"],
                      "priority": 1}],
        aliases={"m": {"strategy": strategy, "targets": ["a/m", "b/m"]}}, **raw)
    return Pair(running.http_url, a, b, a_base)


async def test_a_dead_deployment_costs_no_client_error_and_comes_back(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    p = await pair(nursery, start_gateway, health={"interval_s": 30, "timeout_s": 1,
                                                   "jitter": 0})
    port = int(p.a_base.rsplit(":", 1)[1].split("/")[0])
    p.a.shutdown.set()
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(5):  # wait until a's port is really closed
            while True:
                try:
                    await http.get(f"{p.a_base}/models")
                except httpx.ConnectError:
                    break
                await trio.sleep(0.02)
        answers = [await p.chat(http) for _ in range(10)]
        assert [r.status_code for r in answers] == [200] * 10
        assert {r.headers["x-ailb-deployment"] for r in answers} == {"b"}
        attempts = [int(r.headers["x-ailb-attempts"]) for r in answers]
        assert attempts[:2] == [2, 2] and set(attempts[2:]) == {1}  # then a is cooling down
        stats = await p.stats(http)
        assert stats["deployments"]["a"]["state"] == "cooling_down"
        assert stats["deployments"]["a"]["cooldown_reason"] == "failures"
        assert stats["models"]["m"] == "failover"

        await start_fake(nursery, p.a, port=port)  # a is back
        await trio.sleep(0.6)  # cooldown over: the next request asks for a probe first
        with trio.fail_after(5):
            while (await p.chat(http)).headers["x-ailb-deployment"] != "a":
                await trio.sleep(0.05)
        assert (await p.stats(http))["deployments"]["a"]["state"] == "healthy"
        metrics = (await http.get(f"{p.url}/metrics")).text
    assert 'ailb_cooldowns_total{deployment="a",reason="failures"} 1.0' in metrics
    assert 'ailb_fallbacks_total{model="m"} 2.0' in metrics


@pytest.mark.parametrize("fault", ["status_500", "status_503", "hang", "cut_before_first"])
async def test_faults_fail_over(nursery: trio.Nursery, start_gateway: StartGateway,
                                fault: str) -> None:
    p = await pair(nursery, start_gateway,
                   upstream={"read_timeout_s": 0.3, "first_token_timeout_s": 0.3})
    stream = fault == "cut_before_first"
    if fault.startswith("status"):
        p.a.status = int(fault[-3:])
    elif fault == "hang":
        p.a.hang = True
    else:
        p.a.cut_after_chunks = 0
    async with httpx.AsyncClient(timeout=10) as http:
        answers = [await p.chat(http, stream=stream) for _ in range(5)]
    assert [r.status_code for r in answers] == [200] * 5
    for response in answers:
        if stream:
            assert response.text.rstrip().endswith("data: [DONE]")
        else:
            assert response.json()["choices"][0]["message"]["content"] == "from b"
    assert len(chats(p.a)) == 2  # then it cooled down (failures_to_cooldown: 2)


async def test_429_cools_down_for_exactly_retry_after(nursery: trio.Nursery,
                                                      start_gateway: StartGateway) -> None:
    p = await pair(nursery, start_gateway)
    p.a.status, p.a.retry_after = 429, 1
    async with httpx.AsyncClient(timeout=10) as http:
        first = await p.chat(http)
        assert first.status_code == 200 and first.headers["x-ailb-deployment"] == "b"
        stats = await p.stats(http)
        assert stats["deployments"]["a"]["cooldown_reason"] == "rate_limited"
        p.a.status = None
        assert (await p.chat(http)).headers["x-ailb-deployment"] == "b"  # still cooling
        await trio.sleep(1.05)
        back = await p.chat(http)
    assert back.headers["x-ailb-deployment"] == "a"  # no probe needed after a 429
    assert len(chats(p.a)) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_client_errors_are_not_retried(nursery: trio.Nursery,
                                             start_gateway: StartGateway, status: int) -> None:
    p = await pair(nursery, start_gateway)
    p.a.status = status
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await p.chat(http)
    assert answer.status_code == (status if status != 401 else 502)
    assert answer.headers["x-ailb-attempts"] == "1"
    assert chats(p.b) == []


@pytest.mark.parametrize("stream", [False, True])
async def test_hedging_cancels_the_slow_attempt(nursery: trio.Nursery,
                                                start_gateway: StartGateway,
                                                stream: bool) -> None:
    p = await pair(nursery, start_gateway)
    if stream:
        p.a.first_token_delay_s = 5
    else:
        p.a.latency_s = 5
    async with httpx.AsyncClient(timeout=10) as http:
        start = trio.current_time()
        answer = await p.chat(http, stream=stream, headers={"x-ailb-hedge-ms": "100"})
        elapsed = trio.current_time() - start
        assert answer.status_code == 200
        assert answer.headers["x-ailb-deployment"] == "b"
        assert answer.headers["x-ailb-hedged"] == "b"
        assert answer.headers["x-ailb-attempts"] == "2"
        assert elapsed < 2
        with trio.fail_after(2):
            await p.a.wait_disconnect()  # the slower attempt's connection was closed
        metrics = (await http.get(f"{p.url}/metrics")).text
    assert 'ailb_hedges_total{event="fired"} 1.0' in metrics
    assert 'ailb_hedges_total{event="won"} 1.0' in metrics


async def test_a_fast_first_attempt_fires_no_hedge(nursery: trio.Nursery,
                                                   start_gateway: StartGateway) -> None:
    p = await pair(nursery, start_gateway)
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await p.chat(http, headers={"x-ailb-hedge-ms": "2000"})
    assert answer.headers["x-ailb-deployment"] == "a"
    assert "x-ailb-hedged" not in answer.headers
    assert chats(p.b) == []


async def test_strategy_header(nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    p = await pair(nursery, start_gateway, strategy="round_robin")
    async with httpx.AsyncClient(timeout=10) as http:
        rr = [(await p.chat(http)).headers["x-ailb-deployment"] for _ in range(4)]
        pinned = [(await p.chat(http, headers={"x-ailb-strategy": "failover"}))
                  for _ in range(3)]
        bad = await p.chat(http, headers={"x-ailb-strategy": "fastest"})
    assert sorted(rr) == ["a", "a", "b", "b"]
    assert {r.headers["x-ailb-deployment"] for r in pinned} == {"a"}
    assert {r.headers["x-ailb-strategy"] for r in pinned} == {"failover"}
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-ailb-strategy"


async def test_a_deployment_at_its_cap_is_skipped(nursery: trio.Nursery,
                                                  start_gateway: StartGateway) -> None:
    p = await pair(nursery, start_gateway, a_extra={"rpm": 2})
    async with httpx.AsyncClient(timeout=10) as http:
        served = [(await p.chat(http)).headers["x-ailb-deployment"] for _ in range(4)]
        stats = await p.stats(http)
    assert served == ["a", "a", "b", "b"]
    assert stats["deployments"]["a"]["state"] == "capped"


async def test_caps_hold_when_every_deployment_is_at_its_cap(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI()
    base = await start_fake(nursery, fake)
    running = await start_gateway(deployments=[
        {"name": "only", "type": "openai", "base_url": base, "models": ["m"], "rpm": 2}])
    async with httpx.AsyncClient(timeout=10) as http:
        answers = [await http.post(f"{running.http_url}/v1/chat/completions", headers=auth(),
                                   json={"model": "m", "messages": MSGS}) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 429, 429]
    assert answers[-1].json()["error"]["code"] == "deployment_capacity"
    assert 0 < float(answers[-1].headers["retry-after"]) <= 30
    assert len(chats(fake)) == 2  # the cap held


async def test_a_broken_stream_after_its_first_chunk_is_not_retried(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    p = await pair(nursery, start_gateway)
    p.a.cut_after_chunks = 2
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await p.chat(http, stream=True)
    events = [e for e in answer.text.split("\n\n") if e]
    assert json.loads(events[-1][6:])["error"]["code"] == "upstream_stream_cut"
    assert chats(p.b) == []  # bytes had reached the client: no second attempt
