"""Shared state on a real Valkey server (tests/servers/valkey.py): the coredis edge under Trio,
the counters' Lua against the pure Python, cooldowns and the response cache across instances,
and an outage in the middle."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ailb.accounting import counters
from ailb.accounting.counters import Counters, Taken
from ailb.accounting.reservations import KeyLimits, Refusal
from ailb.caches.response import ResponseCache
from ailb.config.parse import parse_mapping
from ailb.errors import ConfigError, StoreUnavailable, UpstreamError
from ailb.health import HealthBoard
from ailb.limits.bucket import TokenBucket
from ailb.metrics import Metrics
from ailb.pipeline.chat_parse import parse_chat
from ailb.pipeline.exchange import Exchange
from ailb.pricing import PriceTable
from ailb.providers.registry import ProviderPool
from ailb.routing.router import Router
from ailb.routing.stats import DeploymentStats
from ailb.routing.table import RouteTable
from ailb.shared import lane
from ailb.shared import redis as edge
from ailb.shared.cooldowns import SharedCooldowns
from ailb.shared.counters import RedisCounters
from ailb.shared.open import open_redis
from ailb.shared.responses import MAX_ENTRY_BYTES
from tests.conftest import make_settings
from tests.servers.valkey import ValkeyProcess


async def test_coredis_runs_under_trio(valkey_url: str) -> None:
    """The edge's client works in a Trio task (coredis is anyio), scripts included."""
    async with edge.connect(valkey_url) as client:
        await client.set("k", b"v", ttl_s=10)
        assert await client.get("k") == b"v"
        echo = client.script("return {KEYS[1], ARGV[1]}")
        assert await client.run(echo, ["a"], ["b"]) == [b"a", b"b"]
        async with trio.open_nursery() as nursery:  # concurrent commands on one pool
            for i in range(20):
                nursery.start_soon(client.set, f"n{i}", b"x", 10)


async def test_outage_is_fast_and_the_client_comes_back(valkey: ValkeyProcess) -> None:
    async with edge.connect(valkey.url) as client:
        await client.ping()
        valkey.stop()
        with trio.fail_after(5):
            try:
                await client.get("k")
            except StoreUnavailable as exc:
                assert exc.code == "shared_state_unavailable"
            else:
                raise AssertionError("no error while the server is down")
        valkey.start()
        with trio.fail_after(5):
            await client.ping()  # the same client, no reconnect by hand


async def test_scripts_take_the_lane_through_an_outage_and_back(valkey: ValkeyProcess) -> None:
    """Scripts go on the module's own connections: the URL's database, nil and nested replies,
    an error reply (the connection stays usable), an outage that fails fast, then the same
    client again once the server is back empty (the script is loaded again)."""
    async with edge.connect(valkey.url + "/3") as client, \
            edge.connect(valkey.url + "/0") as other:
        assert client._lane is not None
        shape = client.script("redis.call('SET', KEYS[1], ARGV[1]) "
                              "return {KEYS[1], tonumber(ARGV[1]), false, {ARGV[2], {}}}")
        assert await client.run(shape, ["k"], [7, b"x"]) == [b"k", 7, None, [b"x", []]]
        assert await client.get("k") == b"7" and await other.get("k") is None  # database 3
        with pytest.raises(StoreUnavailable):
            await client.run(client.script("return redis.error_reply('boom')"), [], [])
        assert await client.run(shape, ["k"], [8, b"y"]) == [b"k", 8, None, [b"y", []]]
        valkey.stop()
        with trio.fail_after(5), pytest.raises(StoreUnavailable):
            await client.run(shape, ["k"], [9, b"z"])
        valkey.start()
        with trio.fail_after(5):  # the health probe's PING lets calls through again
            await client.ping()
            assert await client.run(shape, ["k"], [10, b"w"]) == [b"k", 10, None, [b"w", []]]


async def test_a_script_on_a_connection_a_restart_killed_is_sent_again(
        valkey: ValkeyProcess) -> None:
    """The server restarted between two calls (no call failed in between): the first call on
    the dead idle connection fails before any reply byte, and is sent once more on a new one."""
    async with edge.connect(valkey.url) as client:
        script = client.script("return ARGV[1]")
        assert await client.run(script, [], [b"before"]) == b"before"
        valkey.stop()
        valkey.start()
        with trio.fail_after(5):
            assert await client.run(script, [], [b"after"]) == b"after"


def test_the_lane_encodes_and_parses_resp() -> None:
    assert lane.encode(["GET", 5, 0.5, b"\r\n"]) == (
        b"*4\r\n$3\r\nGET\r\n$1\r\n5\r\n$3\r\n0.5\r\n$2\r\n\r\n\r\n")
    reply = b"*3\r\n$-1\r\n:-2\r\n*2\r\n+OK\r\n$0\r\n\r\n"
    assert lane.parse(reply, 0) == ([None, -2, [b"OK", b""]], len(reply))
    for cut in range(len(reply)):
        with pytest.raises(lane.Incomplete):
            lane.parse(reply[:cut], 0)
    error, _ = lane.parse(b"-ERR no\r\n", 0)
    assert isinstance(error, edge.ReplyError) and str(error) == "ERR no"


# -- counters --------------------------------------------------------------------------------
def _close(a: TokenBucket | None, b: TokenBucket | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6) for x, y in
               ((a.capacity, b.capacity), (a.rate, b.rate), (a.tokens, b.tokens),
                (a.updated, b.updated)))


def _same(redis: Counters, python: Counters) -> bool:
    return (_close(redis.rpm, python.rpm) and _close(redis.tpm, python.tpm)
            and redis.leases.keys() == python.leases.keys()
            and all(math.isclose(redis.leases[k], python.leases[k]) for k in redis.leases))


_limits = st.builds(KeyLimits, rpm=st.one_of(st.none(), st.integers(1, 20)),
                    tpm=st.one_of(st.none(), st.integers(1, 2000)),
                    parallel=st.one_of(st.none(), st.integers(1, 4)))
_step = st.one_of(
    st.tuples(st.just("take"), _limits, st.integers(0, 3000), st.floats(0, 20)),
    st.tuples(st.just("release"), st.integers(0, 12), st.integers(0, 3000), st.booleans(),
              st.floats(0, 20)))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_step, min_size=1, max_size=25), lease_s=st.sampled_from([5.0, 30.0]))
async def test_lua_mirrors_the_python_counters(valkey_url: str, steps: list[tuple[Any, ...]],
                                               lease_s: float) -> None:
    """Random takes, releases and cancels at random times give the same outcomes and the same
    stored buckets and leases from the Lua script as from counters.take/release."""
    key = f"prop-{uuid.uuid4().hex}"
    now = time.time()
    python = Counters()
    async with edge.connect(valkey_url) as client:
        shared = RedisCounters(client)
        issued = 0
        for step in steps:
            now += step[-1]
            if step[0] == "take":
                _, limits, tokens, _ = step
                lease = f"l{issued}"
                issued += 1
                expected = counters.take(python, limits, tokens, lease, now, lease_s)
                got = await shared.take(key, limits, tokens, lease, lease_s, now=now)
                if isinstance(expected, Refusal):
                    assert isinstance(got, Refusal), (expected, got)
                    assert (got.limit, got.headers) == (expected.limit, expected.headers)
                    assert math.isclose(got.retry_after_s or 0, expected.retry_after_s or 0,
                                        abs_tol=1e-6)
                else:
                    assert isinstance(got, Taken), (expected, got)
                    assert _same(got.counters, expected)
                    python = expected
            else:
                _, number, unused, cancel, _ = step
                python = counters.release(python, f"l{number}", unused, cancel, now)
                await shared.release(key, f"l{number}", unused, cancel, now=now)
            assert _same(await shared.read(key), python)


async def test_rpm_admits_exactly_its_limit_from_three_clients(valkey_url: str) -> None:
    """300 takes at once from three gateways (three clients) against RPM 100: exactly 100."""
    limits = KeyLimits(rpm=100)
    outcomes: list[Taken | Refusal] = []

    async def gateway() -> None:
        async with edge.connect(valkey_url) as client:
            shared = RedisCounters(client)

            async def one() -> None:
                outcomes.append(await shared.take("k", limits, 10, uuid.uuid4().hex, 60))

            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(one)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(gateway)
    taken = [o for o in outcomes if isinstance(o, Taken)]
    refused = [o for o in outcomes if isinstance(o, Refusal)]
    assert (len(taken), len(refused)) == (100, 200)
    assert {r.limit for r in refused} == {"rpm"}
    assert refused[0].headers["x-ratelimit-limit-requests"] == "100"


async def test_leases_end_and_release_is_idempotent(valkey_url: str) -> None:
    limits = KeyLimits(parallel=1, tpm=1000)
    async with edge.connect(valkey_url) as client:
        shared = RedisCounters(client)
        assert isinstance(await shared.take("k", limits, 400, "a", 0.3), Taken)
        refused = await shared.take("k", limits, 400, "b", 0.3)
        assert isinstance(refused, Refusal) and refused.limit == "parallel"
        await trio.sleep(0.4)  # the lease of a gateway that died ends by itself
        assert isinstance(await shared.take("k", limits, 400, "c", 30), Taken)
        await shared.release("k", "c", 400, cancel=False)
        once = await shared.read("k")
        await shared.release("k", "c", 400, cancel=False)  # retried: changes nothing
        assert await shared.read("k") == once
        assert "c" not in once.leases


# -- cooldowns -------------------------------------------------------------------------------
async def _until(predicate: Callable[[], bool], seconds: float) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.02)


async def test_a_cooldown_on_one_gateway_is_seen_by_another(valkey_url: str) -> None:
    now = trio.current_time()
    stats_a = {"d1": DeploymentStats("d1", None, None, now)}
    stats_b = {"d1": DeploymentStats("d1", None, None, now),
               "d2": DeploymentStats("d2", None, None, now)}
    async with edge.connect(valkey_url) as client_a, edge.connect(valkey_url) as client_b:
        a, b = SharedCooldowns(client_a), SharedCooldowns(client_b)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run, lambda: stats_a)
            await nursery.start(b.run, lambda: stats_b)
            stats_a["d1"].cool_down(30, trio.current_time(), "rate_limited", needs_probe=False)
            a.report("d1", 30, "rate_limited", False)  # what the router's hook does
            await _until(lambda: stats_b["d1"].cooling(trio.current_time()), 1.0)
            assert 29 < stats_b["d1"].cooldown_until - trio.current_time() <= 30
            assert stats_b["d1"].cooldown_reason == "shared:rate_limited"
            assert not stats_b["d2"].cooling(trio.current_time())
            assert a.applied == 0  # its own report is not applied back
            nursery.cancel_scope.cancel()


async def test_cooldowns_stay_local_in_an_outage_and_are_shared_after_it(
        valkey: ValkeyProcess) -> None:
    now = trio.current_time()
    stats_a = {"d1": DeploymentStats("d1", None, None, now)}
    stats_b = {"d1": DeploymentStats("d1", None, None, now)}
    async with edge.connect(valkey.url) as client_a, edge.connect(valkey.url) as client_b:
        a, b = SharedCooldowns(client_a), SharedCooldowns(client_b)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run, lambda: stats_a)
            await nursery.start(b.run, lambda: stats_b)
            valkey.stop()
            a.report("d1", 60, "failures", True)  # neither blocks nor raises
            await trio.sleep(0.6)  # both tasks meet the outage (and keep running)
            assert not stats_b["d1"].cooling(trio.current_time())
            valkey.start()
            await _until(lambda: stats_b["d1"].cooling(trio.current_time()), 12.0)
            assert stats_b["d1"].needs_probe
            nursery.cancel_scope.cancel()


# -- the response cache ----------------------------------------------------------------------
def _usable(raw: bytes) -> bytes:
    return raw


async def test_the_response_cache_is_shared_and_a_miss_in_an_outage(
        valkey: ValkeyProcess, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, REDIS_URL=valkey.url)
    metrics = Metrics()
    async with open_redis(settings) as one, open_redis(settings) as two:
        assert one is not None and two is not None
        first = ResponseCache(one.responses, "key", metrics)
        second = ResponseCache(two.responses, "key", metrics)
        key = first.key("k1", {"model": "m", "temperature": 0, "messages": []})
        assert key is not None and key == second.key("k1", {"model": "m", "temperature": 0,
                                                            "messages": []})
        assert await second.get(key, _usable) is None
        await first.put(key, b'{"answer": 1}')
        assert await second.get(key, _usable) == b'{"answer": 1}'  # stored by the other
        await first.put("big", b"x" * (MAX_ENTRY_BYTES + 1))
        assert await second.get("big", _usable) is None  # too large: not stored
        valkey.stop()
        with trio.fail_after(5):
            assert await second.get(key, _usable) is None  # a miss, not an error
            await first.put(key, b"{}")  # dropped, not an error
        valkey.start()  # empty again, as a restarted cache
        with trio.fail_after(5):
            # calls fail at once for a second after a failure; the gateway's probe (a PING,
            # which always tries) lets them through again as soon as the server answers
            await one.client.ping()
            await two.client.ping()
            await first.put(key, b'{"answer": 2}')
            assert await second.get(key, _usable) == b'{"answer": 2}'
    lookups = metrics.cache.labels(cache="response", result="unavailable")._value.get()
    assert lookups == 1


async def test_counters_fail_fast_in_an_outage_and_work_after_it(valkey: ValkeyProcess,
                                                                 tmp_path: Path) -> None:
    settings = make_settings(tmp_path, REDIS_URL=valkey.url)
    async with open_redis(settings) as shared:
        assert shared is not None
        limits = KeyLimits(rpm=5)
        assert isinstance(await shared.counters.take("k", limits, 1, "a", 60), Taken)
        valkey.stop()
        with trio.fail_after(5):
            with pytest.raises(StoreUnavailable) as caught:
                await shared.counters.take("k", limits, 1, "b", 60)
            assert caught.value.status == 503
            with pytest.raises(StoreUnavailable):
                await shared.counters.release("k", "a", 0, cancel=False)
        with pytest.raises(StoreUnavailable, match="failed just now"):  # at once, untried
            await shared.counters.take("k", limits, 1, "b", 60)
        valkey.start()
        with trio.fail_after(5):  # the same objects, no restart: the probe, then calls
            await shared.client.ping()
            assert isinstance(await shared.counters.take("k", limits, 1, "c", 60), Taken)


async def test_without_redis_url_nothing_is_shared(tmp_path: Path) -> None:
    async with open_redis(make_settings(tmp_path)) as shared:
        assert shared is None


async def test_a_bad_redis_url_is_a_config_error_without_the_secret(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, REDIS_URL="redis://:hunter2@localhost:notaport")
    with pytest.raises(ConfigError) as caught:
        async with open_redis(settings):
            pass
    assert "hunter2" not in str(caught.value)


async def test_the_router_tells_its_hook_of_a_cooldown() -> None:
    """The narrow hook SharedCooldowns.report hangs on: a 429 with Retry-After is reported."""
    settings = parse_mapping({"deployments": [
        {"name": "a", "type": "openai", "base_url": "http://a/v1", "models": ["m"]}]}, {})
    pool = ProviderPool(httpx.MockTransport(lambda request: httpx.Response(
        429, headers={"retry-after": "7"}, json={"error": {"message": "slow down"}})))
    providers, _ = pool.update(settings.deployments, settings.upstream)
    reported: list[tuple[str, float, str, bool]] = []
    router = Router(RouteTable(settings), providers, HealthBoard(list(providers)), Metrics(),
                    settings.upstream, settings.routing, PriceTable(),
                    on_cooldown=lambda *args: reported.append(args))
    try:
        with pytest.raises(UpstreamError):
            await router.complete(parse_chat({"model": "m", "messages": [
                {"role": "user", "content": "hi"}]}, "r1"), Exchange("r1"))
    finally:
        await pool.aclose()
    assert [(name, round(s), reason, probe) for name, s, reason, probe in reported] == [
        ("a", 7, "rate_limited", False)]
