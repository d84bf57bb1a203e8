"""Each strategy does what its name says, measured over many draws (pure, no I/O)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio.testing

from ailb.config.schema import RoutingSettings
from ailb.limits.bucket import TokenBucket
from ailb.pricing import Price, PriceTable, estimate_prompt_tokens
from ailb.routing.stats import DeploymentStats
from ailb.routing.strategies import Candidate, RoundRobinScores, choose
from ailb.routing.table import Target


def cand(name: str, weight: float = 1.0, in_flight: int = 0, ewma: float | None = None,
         cost: float = 0.0, priority: int = 0, order: int = 0) -> Candidate:
    return Candidate(Target(name, "m", "openai", weight, priority), in_flight, ewma, cost, order)


def draws(strategy: str, candidates: list[Candidate], n: int, seed: int = 1) -> Counter[str]:
    rng, scores = random.Random(seed), RoundRobinScores()
    return Counter(choose(strategy, "r", candidates, rng, scores).target.deployment
                   for _ in range(n))


def test_round_robin_is_smooth_and_weighted() -> None:
    scores, rng = RoundRobinScores(), random.Random(0)
    group = [cand("a", 5), cand("b", 1), cand("c", 1)]
    order = [choose("round_robin", "r", group, rng, scores).target.deployment for _ in range(14)]
    assert order == ["a", "a", "b", "a", "c", "a", "a"] * 2  # nginx's smooth sequence


def test_round_robin_resumes_its_order_when_a_deployment_comes_back() -> None:
    scores, rng = RoundRobinScores(), random.Random(0)
    both = [cand("a"), cand("b")]
    assert [choose("round_robin", "r", both, rng, scores).target.deployment
            for _ in range(3)] == ["a", "b", "a"]
    only_a = [cand("a")]
    assert choose("round_robin", "r", only_a, rng, scores).target.deployment == "a"
    after = [choose("round_robin", "r", both, rng, scores).target.deployment for _ in range(4)]
    assert sorted(Counter(after).values()) == [2, 2]  # back to strict alternation
    assert after[0] == "b"


def test_random_follows_weights() -> None:
    counts = draws("random", [cand("a", 3), cand("b", 1)], 20_000)
    assert counts["a"] / 20_000 == pytest.approx(0.75, abs=0.02)


def test_load_balanced_prefers_the_least_loaded_per_weight() -> None:
    assert draws("load_balanced", [cand("a", in_flight=3), cand("b", in_flight=1)], 50) == \
        {"b": 50}
    assert draws("load_balanced", [cand("a", 1, in_flight=1), cand("b", 4, in_flight=3)],
                 50) == {"b": 50}  # (3+1)/4 < (1+1)/1
    ties = draws("load_balanced", [cand("a"), cand("b")], 2000)
    assert ties["a"] / 2000 == pytest.approx(0.5, abs=0.05)


def test_latency_optimized() -> None:
    assert draws("latency_optimized", [cand("a", ewma=0.1), cand("new")], 20) == {"new": 20}
    counts = draws("latency_optimized", [cand("fast", ewma=0.1), cand("slow", ewma=0.5)],
                   10_000)
    assert counts["slow"] / 10_000 == pytest.approx(0.025, abs=0.01)  # exploration only
    three = draws("latency_optimized", [cand("a", ewma=0.1), cand("b", ewma=0.2),
                                        cand("c", ewma=0.9)], 10_000)
    assert three["a"] > three["b"] > three["c"] > 0


def test_cost_optimized_with_the_price_table() -> None:
    table = PriceTable({"my-local": Price(0.01, 0.01)})
    prompt, out = 1000, 500

    def cost(model: str, provider: str) -> float:
        return table.price(model, provider).cost(prompt, out)

    group = [cand("gpt4o", cost=cost("gpt-4o-2024-08-06", "openai")),
             cand("mini", cost=cost("gpt-4o-mini", "openai")),
             cand("sonnet", cost=cost("claude-sonnet-4-5", "anthropic"))]
    assert draws("cost_optimized", group, 30) == {"mini": 30}
    assert cost("llama3", "ollama") == 0.0
    assert cost("my-local", "ollama") > 0  # a configured price wins even for Ollama
    assert cost("some-new-model", "openai") > cost("gpt-4o", "openai")  # unknown: not cheap


def test_failover_is_strict_priority_then_order() -> None:
    group = [cand("b", priority=1, order=0), cand("a", priority=0, order=1),
             cand("c", priority=1, order=2)]
    assert draws("failover", group, 10) == {"a": 10}
    assert draws("failover", group[::2], 10) == {"b": 10}


POLICY = RoutingSettings(failures_to_cooldown=3, failure_window_s=10, cooldown_s=30)


def test_failures_in_a_window_cool_down_then_need_a_probe() -> None:
    stats = DeploymentStats("a", None, None, now=0)
    assert not stats.record_failure(0, POLICY)
    assert not stats.record_failure(20, POLICY)  # the first fell out of the window
    assert not stats.record_failure(21, POLICY)
    assert stats.record_failure(22, POLICY)
    assert stats.availability(40, None, 0) == "cooling"
    assert stats.availability(52.5, None, 0) == "probing"
    assert stats.availability(53, last_probe_ok_at=45, prompt_tokens=0) == "probing"
    assert stats.availability(53, last_probe_ok_at=52.1, prompt_tokens=0) == "ok"


def test_rate_limit_cooldown_is_exact_and_needs_no_probe() -> None:
    stats = DeploymentStats("a", None, None, now=0)
    stats.cool_down(7, 100, "rate_limited", needs_probe=False)
    assert stats.availability(106.9, None, 0) == "cooling"
    assert stats.availability(107.0, None, 0) == "ok"


def test_deployment_caps() -> None:
    stats = DeploymentStats("a", rpm=2, tpm=1000, now=0)
    stats.take_capacity(100, 0)
    stats.take_capacity(100, 0)
    assert stats.availability(0, None, 100) == "capped"  # rpm used up
    assert stats.availability(30, None, 100) == "ok"  # one request back after 30 s
    stats = DeploymentStats("b", rpm=None, tpm=1000, now=0)
    stats.take_capacity(950, 0)
    assert stats.availability(0, None, 100) == "capped"
    assert stats.availability(6, None, 100) == "ok"
    stats = DeploymentStats("c", rpm=None, tpm=1000, now=0)
    stats.take_capacity(5000, 0)  # more than the whole cap: all of it, never below zero
    assert stats.tpm is not None and stats.tpm.tokens == 0
    assert stats.availability(0, None, 100) == "capped"
    assert stats.availability(6, None, 100) == "ok"


def test_token_bucket() -> None:
    bucket: TokenBucket | None = TokenBucket.per_minute(60, now=0)
    for _ in range(60):
        assert bucket is not None
        bucket = bucket.take(1, 0)
    assert bucket is not None and bucket.take(1, 0) is None
    assert bucket.seconds_until(1, 0) == pytest.approx(1.0)
    bucket = bucket.take(1, 1.0)
    assert bucket is not None
    assert bucket.give_back(5, 1.0).available(1.0) == pytest.approx(5)
    assert bucket.available(1.0) == pytest.approx(0)  # a value: giving back made a new one
    big = TokenBucket.per_minute(10, now=0)
    # larger than the whole bucket: never taken, however full (the holder refuses it for good)
    assert big.take(50, 0) is None and not big.fits(50)
    assert big.seconds_until(50, 0) == 0  # counted as the whole bucket, which is there
    taken = big.take(10, 0)
    assert big.fits(10) and taken is not None and taken.tokens == 0


def test_latency_samples() -> None:
    stats = DeploymentStats("a", None, None, now=0)
    for i, value in enumerate([0.1] * 90 + [1.0] * 10):
        stats.observe_latency(value, float(i), decay_s=30)
    assert stats.percentile(0.5) == 0.1 and stats.percentile(0.95) == 1.0
    assert stats.ewma_s == 1.0  # peak: a slow sample counts at once
    for i in range(100, 200):
        stats.observe_latency(0.1, float(i), decay_s=30)
    assert stats.ewma_s is not None and stats.ewma_s < 0.2  # and decays when it is over


def test_prompt_estimate() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400},
                         {"role": "user", "content": [{"type": "text", "text": "y" * 40}]}]}
    assert estimate_prompt_tokens(body) == 440 // 3 + 8 + 3  # ASCII: a third of the bytes
    cjk = {"messages": [{"role": "user", "content": "漢" * 90}]}
    assert estimate_prompt_tokens(cjk) == 90 + 4 + 3  # about a token per CJK character


async def test_hedge_race_closes_everything_when_cancelled_during_cleanup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first attempt wins while the hedge is still cleaning up (shielded), and then the
    request itself is cancelled: the winner must still be closed, not leaked."""
    from ailb.routing.hedge import race

    opened: set[str] = set()
    closed: set[str] = set()
    a, b = Target("a", "m", "openai"), Target("b", "m", "openai")

    async def attempt(target: Target) -> str:
        try:
            await trio.sleep(0.1 if target is a else 10)
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.05)  # closing a connection takes a moment
            raise
        opened.add(target.deployment)
        return target.deployment

    async def discard(value: str) -> None:
        closed.add(value)

    with trio.move_on_after(0.12):
        await race(a, 0.05, lambda: b, attempt, discard, lambda target: None)
    assert opened == {"a"}
    assert closed == opened
