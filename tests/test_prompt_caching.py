"""Prompt caching preserved and priced: ``cache_control`` markers reach Anthropic (never more
than 4, never added), the same request gives the same upstream bytes, cache reads and writes
show in usage, in the key's spend (at their own rates) and in the metrics. Against the fake
Anthropic, which counts cache reads like the API, with the official openai and anthropic SDKs."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from ailb.errors import InvalidRequest
from ailb.model import ChatRequest, Usage
from ailb.pricing import Price, PriceTable
from ailb.providers.anthropic_wire import to_anthropic
from tests.conftest import ADMIN_KEY, SDKFactory, StartGateway, auth, in_thread
from tests.fakes import anthropic_upstream

MODEL = "claude-sonnet-4-5"
EPHEMERAL = {"type": "ephemeral"}
LONG = " ".join(f"rule{i}" for i in range(200))  # the long, stable prefix worth caching
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
         for n in ("zeta", "alpha", "mid")]  # not in order: the order must be kept anyway


def _request(**body: Any) -> ChatRequest:
    return ChatRequest(body={"model": "c", **body}, model="c", stream=False,
                       include_usage=False, max_tokens=None, request_id="r1")


def _messages(question: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": [{"type": "text", "text": LONG,
                                            "cache_control": EPHEMERAL}]},
            {"role": "user", "content": question}]


def test_markers_go_on_the_corresponding_blocks() -> None:
    out = to_anthropic(_request(
        messages=[*_messages("Q?"),
                  {"role": "assistant", "content": "A.", "cache_control": EPHEMERAL},
                  {"role": "user", "content": [
                      {"type": "text", "text": "one"},
                      {"type": "text", "text": "two",
                       "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
        tools=[*TOOLS[:2], {**TOOLS[2], "cache_control": EPHEMERAL}]), "claude-x")
    assert out["system"] == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    assert [t["name"] for t in out["tools"]] == ["zeta", "alpha", "mid"]
    assert out["tools"][2]["cache_control"] == EPHEMERAL
    assert "cache_control" not in out["tools"][0]
    assert out["messages"][1] == {"role": "assistant", "content": [
        {"type": "text", "text": "A.", "cache_control": EPHEMERAL}]}
    assert out["messages"][2]["content"] == [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    # unmarked system messages stay one joined string, as before
    plain = to_anthropic(_request(messages=[{"role": "system", "content": "S"},
                                            {"role": "user", "content": "Q"}]), "claude-x")
    assert plain["system"] == "S"


def test_more_than_four_markers_are_refused_and_bad_markers_named() -> None:
    parts = [{"type": "text", "text": f"p{i}", "cache_control": EPHEMERAL} for i in range(5)]
    with pytest.raises(InvalidRequest, match=r"maximum of 4 blocks with cache_control.*Found 5"):
        to_anthropic(_request(messages=[{"role": "user", "content": parts}]), "claude-x")
    assert to_anthropic(_request(messages=[{"role": "user", "content": parts[:4]}]), "c")
    with pytest.raises(InvalidRequest) as info:
        to_anthropic(_request(messages=[{"role": "user", "content": [
            {"type": "text", "text": "x", "cache_control": {"type": "forever"}}]}]), "c")
    assert info.value.param == "messages[0].content[0].cache_control"


def test_cache_reads_and_writes_are_priced_at_their_own_rates() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=600_000,
                  cache_write_tokens=300_000)
    claude = PriceTable().price("claude-sonnet-4-5", "anthropic")
    # 100k fresh at 3.00, 600k read at 0.30, 300k written at 3.75
    assert claude.usage_cost(usage, "anthropic") == pytest.approx(0.3 + 0.18 + 1.125)
    configured = Price(1.0, 2.0, cached_input_per_mtok=0.25, cache_write_per_mtok=5.0)
    assert configured.usage_cost(usage, "openai") == pytest.approx(0.1 + 0.15 + 1.5)
    assert Price(1.0, 2.0).usage_cost(usage, "openai") == pytest.approx(0.1 + 0.3 + 0.3)


async def _spend(http: httpx.AsyncClient, url: str, key_id: str, requests: int) -> float:
    with trio.fail_after(10):
        while True:
            usage = (await http.get(f"{url}/admin/keys/{key_id}/usage", headers=auth())).json()
            if usage["requests"] >= requests:
                return float(usage["spend_usd"])
            await trio.sleep(0.05)


async def test_the_second_call_reads_the_cache_and_costs_less(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory,
        http: httpx.AsyncClient) -> None:
    fake = anthropic_upstream.FakeAnthropic(models=[MODEL])
    running = await start_gateway(
        deployments=[{"name": "claude", "type": "anthropic", "api_key": "k", "models": [MODEL],
                      "base_url": await anthropic_upstream.start_fake(nursery, fake)}],
        prices={MODEL: {"input_per_mtok": 1000, "output_per_mtok": 0,
                        "cached_input_per_mtok": 100, "cache_write_per_mtok": 2000}},
        accounting={"ledger_flush_s": 0.05})
    url = running.http_url
    created = (await http.post(f"{url}/admin/keys", headers=auth(),
                               json={"name": "c", "monthly_budget_usd": 100})).json()
    client = sdk(url, created["key"])

    def ask() -> Any:
        return client.chat.completions.create(model=MODEL, messages=_messages("Why?"),
                                              tools=TOOLS)  # type: ignore[arg-type]

    first = await in_thread(ask)
    second = await in_thread(ask)
    posted = [body for body in fake.raw_bodies if body]  # health probes send no body
    assert len(posted) == 2 and posted[0] == posted[1]  # byte-stable: the prefix cache can hit
    assert [t["name"] for t in fake.requests[-1].body["tools"]] == ["zeta", "alpha", "mid"]
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert first.model_dump()["usage"]["cache_creation_input_tokens"] == 200
    assert second.usage.prompt_tokens_details.cached_tokens == 200
    assert second.usage.prompt_tokens == first.usage.prompt_tokens == 201
    assert (fake.cache_writes, fake.cache_reads) == (1, 1)

    # 200 written at 2000/M + 1 fresh at 1000/M, then 200 read at 100/M + 1 fresh
    spend = await _spend(http, url, created["id"], 2)
    assert spend == pytest.approx((200 * 2000 + 1000 + 200 * 100 + 1000) / 1e6)

    metrics = (await http.get(f"{url}/metrics")).text
    assert 'ailb_prompt_cached_tokens_total{deployment="claude"} 200.0' in metrics
    assert 'ailb_prompt_cache_write_tokens_total{deployment="claude"} 200.0' in metrics

    # the anthropic SDK through /v1/messages: the native markers reach the fake as sent
    claude = anthropic.Anthropic(base_url=url, api_key=ADMIN_KEY, max_retries=0, timeout=15)
    try:
        def native() -> Any:
            return claude.messages.create(
                model=MODEL, max_tokens=50,
                system=[{"type": "text", "text": LONG + " native",
                         "cache_control": {"type": "ephemeral"}}],
                messages=[{"role": "user", "content": "Why?"}])

        one = await in_thread(native)
        two = await in_thread(native)
    finally:
        claude.close()
    assert (one.usage.cache_creation_input_tokens, one.usage.cache_read_input_tokens) == (201, 0)
    assert (two.usage.cache_creation_input_tokens, two.usage.cache_read_input_tokens) == (0, 201)
    assert two.usage.input_tokens == 1


@given(prompt=st.integers(0, 10**6), completion=st.integers(0, 10**6),
       cached=st.integers(0, 10**6), written=st.integers(0, 10**6),
       provider=st.sampled_from(["anthropic", "openai", "ollama"]),
       rates=st.tuples(*[st.none() | st.floats(0, 100)] * 2))
def test_a_reservation_covers_any_cache_split(prompt: int, completion: int, cached: int,
                                              written: int, provider: str,
                                              rates: tuple[float | None, float | None]) -> None:
    """What a call reserves (worst_cost) is never below what it settles (usage_cost), however
    its prompt splits into cache reads, cache writes (dearer than input on Anthropic) and fresh
    tokens: a budget cannot be passed by a cache write."""
    price = Price(3, 15, *rates)
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
                  cache_write_tokens=written)
    assert price.usage_cost(usage, provider) <= price.worst_cost(prompt, completion, provider) \
        * (1 + 1e-12) + 1e-15
