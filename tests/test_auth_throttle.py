"""The failed-authentication throttle: the pure policy (ailb/keys/throttle.py) as properties
and plain cases, then a burst of wrong keys over HTTP (the API, the admin API) and over gRPC
(both services) on real ports."""

from __future__ import annotations

import re
from typing import Any

import grpc
import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ailb.grpc_api.gen.ailb.v1 import gateway_pb2 as gw
from ailb.grpc_api.gen.marchproxy import module_pb2 as pb
from ailb.keys.throttle import AuthThrottle, ThrottlePolicy, address_key
from tests.conftest import ADMIN_KEY, StartGateway, auth
from tests.grpc_stubs.ailb.v1 import gateway_pb2_grpc
from tests.grpc_stubs.marchproxy import module_pb2_grpc

EPS = 1e-6


# --- the pure policy -----------------------------------------------------------------------------
def guess(throttle: AuthThrottle, address: str, now: float) -> bool:
    """A wrong key from ``address``: True if it was evaluated (401), False if refused (429)."""
    if throttle.wait(address, now) is not None:
        return False
    throttle.failed(address, now)
    return True


@settings(max_examples=300, deadline=None)
@given(failures=st.integers(1, 10), window_s=st.floats(0.5, 120),
       steps=st.lists(st.tuples(st.integers(0, 4), st.floats(0, 5)), max_size=120))
def test_a_guesser_gets_at_most_its_attempts_in_any_span(
        failures: int, window_s: float, steps: list[tuple[int, float]]) -> None:
    """However the guesses of several addresses interleave, each address has at most
    ``failures`` keys evaluated in a burst, plus one per ``window_s / failures`` after it; a
    refused guess takes nothing, so waiting ``wait`` always lets the next one in."""
    throttle = AuthThrottle(ThrottlePolicy(failures, window_s, max_addresses=5))
    now = 0.0
    evaluated: dict[str, list[float]] = {}
    for who, dt in steps:
        now += dt
        address = f"10.0.0.{who}"
        if guess(throttle, address, now):
            evaluated.setdefault(address, []).append(now)
        else:
            wait = throttle.wait(address, now)
            assert wait is not None and 0 < wait <= window_s / failures + EPS
            assert throttle.wait(address, now + wait + EPS) is None
    for times in evaluated.values():
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                span = times[j] - start
                assert j - i + 1 <= failures + span * failures / window_s + EPS


@settings(max_examples=200, deadline=None)
@given(cap=st.integers(1, 6), steps=st.lists(st.tuples(st.integers(0, 30), st.floats(0, 3)),
                                             max_size=150))
def test_memory_is_bounded_and_the_least_recent_goes_first(
        cap: int, steps: list[tuple[int, float]]) -> None:
    """One failure throttles an address for ~forever here, so only the bound forgets: the
    addresses tracked are exactly the ``cap`` that failed most recently."""
    throttle = AuthThrottle(ThrottlePolicy(1, 1e9, max_addresses=cap))
    now = 0.0
    order: list[str] = []  # least recently failed first
    for who, dt in steps:
        now += dt
        address = f"192.0.2.{who}"
        throttle.failed(address, now)
        order = [a for a in order if a != address] + [address]
        assert throttle.statistics(now).tracked == min(cap, len(order))
        throttled = {f"192.0.2.{i}" for i in range(31)
                     if throttle.wait(f"192.0.2.{i}", now) is not None}
        assert throttled == set(order[-cap:])


def test_n_failures_then_429_until_one_attempt_comes_back() -> None:
    throttle = AuthThrottle(ThrottlePolicy(failures=3, window_s=30))
    assert [throttle.failed("203.0.113.9", 0.0) for _ in range(3)] == [False, False, True]
    assert throttle.wait("203.0.113.9", 0.0) == pytest.approx(10.0)  # 30 s / 3 attempts
    assert throttle.wait("203.0.113.9", 9.0) == pytest.approx(1.0)
    assert throttle.wait("203.0.113.10", 0.0) is None  # another address is not concerned
    assert throttle.wait("203.0.113.9", 10.0) is None
    assert throttle.failed("203.0.113.9", 10.0)  # one attempt came back, and went
    assert throttle.statistics(10.0).throttled == 1
    assert throttle.wait("203.0.113.9", 40.0) is None  # whole again: forgotten when room is
    disabled = AuthThrottle(ThrottlePolicy(failures=0))
    assert not any(disabled.failed("x", 0.0) for _ in range(1000))
    assert disabled.wait("x", 0.0) is None and disabled.statistics(0.0).tracked == 0


def test_full_buckets_are_forgotten_before_the_bound_bites() -> None:
    throttle = AuthThrottle(ThrottlePolicy(failures=2, window_s=10, max_addresses=2))
    throttle.failed("a", 0.0)
    throttle.failed("a", 0.0)  # "a" throttled
    throttle.failed("b", 1.0)
    throttle.failed("c", 2.0)  # over the bound: "a", the least recent, is forgotten
    assert throttle.wait("a", 2.0) is None and throttle.statistics(2.0).tracked == 2
    throttle.failed("d", 100.0)  # "b" and "c" are whole again: both forgotten
    assert throttle.statistics(100.0).tracked == 1


def test_ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2::ffff") == \
        "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7" == address_key("192.0.2.7")
    assert address_key("") == "" and address_key("/run/ailb.sock") == "/run/ailb.sock"
    throttle = AuthThrottle(ThrottlePolicy(failures=1))
    throttle.failed("2001:db8::1", 0.0)
    assert throttle.wait("2001:db8::2", 0.0) is not None  # same /64: same guesser


# --- HTTP -------------------------------------------------------------------------------------
WRONG = "sk-ailb-0123456789ab-wrongwrongwrongwrongwrong"
CHAT = {"model": "echo-1", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}


def _throttle(limit: int, window_s: float) -> dict[str, Any]:
    return {"server": {"unready_delay_s": 0, "auth_failure_limit": limit,
                       "auth_failure_window_s": window_s}}


def _metric(text: str, name: str, door: str) -> float:
    found = re.search(rf'^{name}_total{{door="{door}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_burst_of_wrong_keys_over_http_gets_429_after_n(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway(**_throttle(5, 600))).http_url  # 2 minutes an attempt
    codes: list[int] = []

    async def wrong(client: httpx.AsyncClient, path: str) -> None:
        if path == "/v1/chat/completions":
            reply = await client.post(f"{url}{path}", headers=auth(WRONG), json=CHAT)
        else:  # the admin API's failures count alike
            reply = await client.get(f"{url}{path}", headers=auth(WRONG))
        codes.append(reply.status_code)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50)) as many:
        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(wrong, many,
                                   "/admin/keys" if i % 2 else "/v1/chat/completions")
    assert codes.count(401) == 5 and codes.count(429) == 55  # exactly N keys were evaluated
    refused = await http.post(f"{url}/v1/chat/completions", headers=auth(WRONG), json=CHAT)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "too_many_auth_failures")
    assert 1 <= int(refused.headers["retry-after"]) <= 120  # 600 s / 5 attempts
    assert 0 < int(refused.headers["retry-after-ms"]) <= 120_000
    # while throttled, a key that verifies still passes (behind a proxy or NAT, one client's
    # stale key must not lock the others out); no key at all is refused like a wrong one
    for path in ("/v1/models", "/admin/keys"):
        assert (await http.get(f"{url}{path}", headers=auth())).status_code == 200
    assert (await http.post(f"{url}/v1/chat/completions", json=CHAT)).status_code == 429
    assert (await http.get(f"{url}/healthz")).status_code == 200  # no key, not throttled
    # another address is not concerned (all of 127/8 is loopback on Linux)
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(transport=transport, timeout=10) as other:
        assert (await other.get(f"{url}/v1/models", headers=auth())).status_code == 200
        assert (await other.get(f"{url}/v1/models", headers=auth(WRONG))).status_code == 401
        metrics = (await other.get(f"{url}/metrics")).text
    assert _metric(metrics, "ailb_auth_failures", "http") == 60 + 3
    assert _metric(metrics, "ailb_auth_throttled", "http") == 55 + 2


async def test_the_throttle_lets_up_after_its_window(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway(**_throttle(2, 8.0))).http_url  # an attempt back every 4 s
    for _ in range(2):
        assert (await http.get(f"{url}/v1/models", headers=auth(WRONG))).status_code == 401
    refused = await http.get(f"{url}/v1/models", headers=auth(WRONG))
    assert refused.status_code == 429 and refused.headers["retry-after"] in {"3", "4"}
    assert (await http.get(f"{url}/v1/models", headers=auth())).status_code == 200
    await trio.sleep(int(refused.headers["retry-after-ms"]) / 1000 + 0.05)
    # one attempt has come back (the next comes 4 s later: far more than two requests take)
    assert (await http.get(f"{url}/v1/models", headers=auth(WRONG))).status_code == 401
    assert (await http.get(f"{url}/v1/models", headers=auth(WRONG))).status_code == 429


async def test_0_disables_the_throttle(start_gateway: StartGateway,
                                       http: httpx.AsyncClient) -> None:
    url = (await start_gateway(**_throttle(0, 60))).http_url
    codes = [(await http.get(f"{url}/v1/models", headers=auth(WRONG))).status_code
             for _ in range(40)]
    assert set(codes) == {401}


# --- gRPC -------------------------------------------------------------------------------------
def _grpc_calls(port: int, key: str, times: int) -> list[tuple[str, dict[str, str]]]:
    """``times`` ChatComplete calls, then one GetStatus, with ``key`` (grpcio, blocking): the
    status code name and the trailing metadata of each."""
    metadata = (("authorization", f"Bearer {key}"),)
    out: list[tuple[str, dict[str, str]]] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        calls: list[Any] = [lambda: gateway.ChatComplete(gw.ChatRequest(
            model="echo-1", messages=[gw.Message(role="user", content="hi")]),
            metadata=metadata, timeout=10)] * times
        module = module_pb2_grpc.ModuleServiceStub(channel)
        calls.append(lambda: module.GetStatus(pb.GetStatusRequest(), metadata=metadata,
                                              timeout=10))
        for one in calls:
            try:
                one()
                out.append(("OK", {}))
            except grpc.RpcError as exc:
                out.append((exc.code().name,  # type: ignore[attr-defined]
                            dict(exc.trailing_metadata() or ())))  # type: ignore[attr-defined]
    return out


async def test_a_burst_of_wrong_keys_over_grpc_gets_resource_exhausted_after_n(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    running = await start_gateway(**_throttle(3, 600))
    port = running.grpc_port
    wrong = await trio.to_thread.run_sync(_grpc_calls, port, WRONG, 5)
    assert [code for code, _ in wrong] == ["UNAUTHENTICATED"] * 3 + ["RESOURCE_EXHAUSTED"] * 3
    for _, trailing in wrong[3:]:  # retry info as the gRPC door sends every rate limit's
        assert 1 <= int(trailing["retry-after"]) <= 200
        assert 0 < int(trailing["retry-after-ms"]) <= 200_000
    # the admin key still passes while the address is throttled, on both services
    admin = await trio.to_thread.run_sync(_grpc_calls, port, ADMIN_KEY, 1)
    assert [code for code, _ in admin] == ["OK"] * 2
    # one process, one throttle per address: a wrong key over HTTP is refused as well
    assert (await http.get(f"{running.http_url}/v1/models",
                           headers=auth(WRONG))).status_code == 429
    metrics = (await http.get(f"{running.http_url}/metrics")).text
    assert _metric(metrics, "ailb_auth_failures", "grpc") == 6
    assert _metric(metrics, "ailb_auth_throttled", "grpc") == 3


async def test_admin_key_failures_over_grpc_count(start_gateway: StartGateway) -> None:
    running = await start_gateway(**_throttle(2, 600))
    codes = [code for code, _ in await trio.to_thread.run_sync(
        _grpc_calls, running.grpc_port, WRONG, 0)]
    codes += [code for code, _ in await trio.to_thread.run_sync(
        _grpc_calls, running.grpc_port, WRONG, 0)]
    codes += [code for code, _ in await trio.to_thread.run_sync(
        _grpc_calls, running.grpc_port, WRONG, 0)]
    assert codes == ["UNAUTHENTICATED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED"]


async def test_a_revoked_or_expired_key_is_no_guess(start_gateway: StartGateway,
                                                    http: httpx.AsyncClient) -> None:
    """Its secret matched: a client that keeps an old key (behind a shared address) is told
    so, and does not use up the address's attempts."""
    url = (await start_gateway(**_throttle(2, 600))).http_url
    made = (await http.post(f"{url}/admin/keys", headers=auth(), json={"name": "old"})).json()
    assert (await http.delete(f"{url}/admin/keys/{made['id']}", headers=auth())).status_code \
        == 200
    for _ in range(5):
        reply = await http.get(f"{url}/v1/models", headers=auth(made["key"]))
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "key_revoked"
    assert (await http.get(f"{url}/v1/models", headers=auth(WRONG))).status_code == 401
