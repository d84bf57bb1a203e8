"""Choosing one target among the available candidates. Pure: values in, a choice out (the only
state is round robin's running weights, kept in an object the caller owns).

* ``round_robin``: smooth weighted round robin (nginx's): every pick adds each candidate's
  weight to its running score, picks the highest, and subtracts the total from the winner.
  Scores of candidates that drop out are kept, so the order resumes where it was when they
  come back.
* ``random``: weighted random.
* ``load_balanced``: fewest in-flight requests per unit of weight; ties broken at random.
* ``latency_optimized``: a candidate with no latency sample yet is tried first (one request at a
  time until it has one); otherwise the
  power of two choices over peak-EWMA latency x (in-flight + 1), plus a small share of random
  picks so that a recovered deployment gets measured again.
* ``cost_optimized``: the lowest expected cost of this request (prompt estimate and
  ``max_tokens`` at the model's prices); ties broken by load.
* ``failover``: strict priority (the YAML's ``priority``, lower first, then declaration order).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ailb.routing.table import Target


@dataclass(frozen=True, slots=True)
class Candidate:
    target: Target
    in_flight: int
    ewma_s: float | None
    expected_cost: float
    order: int  # position in the route's target list


class RoundRobinScores:
    """Running scores of smooth weighted round robin, per route."""

    def __init__(self) -> None:
        self._scores: dict[str, dict[str, float]] = {}

    def pick(self, route: str, candidates: Sequence[Candidate]) -> Candidate:
        scores = self._scores.setdefault(route, {})
        total = 0.0
        best: Candidate | None = None
        for candidate in candidates:
            name = candidate.target.deployment
            weight = max(candidate.target.weight, 0.0)
            scores[name] = scores.get(name, 0.0) + weight
            total += weight
            if best is None or scores[name] > scores[best.target.deployment]:
                best = candidate
        assert best is not None
        scores[best.target.deployment] -= total
        return best


def _weight(candidate: Candidate) -> float:
    return candidate.target.weight if candidate.target.weight > 0 else 1e-9


def least_loaded(candidates: Sequence[Candidate], rng: random.Random) -> Candidate:
    """The candidate with the fewest in-flight requests per unit of weight (ties: random)."""
    best: list[Candidate] = []
    best_load = float("inf")
    for candidate in candidates:
        load = (candidate.in_flight + 1) / _weight(candidate)
        if load < best_load:
            best, best_load = [candidate], load
        elif load == best_load:
            best.append(candidate)
    return best[0] if len(best) == 1 else rng.choice(best)


def weighted_random(candidates: Sequence[Candidate], rng: random.Random) -> Candidate:
    return rng.choices(list(candidates), weights=[_weight(c) for c in candidates])[0]


def lowest_latency(candidates: Sequence[Candidate], rng: random.Random,
                   explore: float) -> Candidate:
    # an unmeasured deployment gets one request at a time until it has a sample, so a slow
    # newcomer cannot swallow a whole burst
    unmeasured = [c for c in candidates if c.ewma_s is None and c.in_flight == 0]
    if unmeasured:
        return unmeasured[0]
    measured = [c for c in candidates if c.ewma_s is not None]
    if measured:
        candidates = measured
    if len(candidates) == 1:
        return candidates[0]
    if rng.random() < explore:
        return rng.choice(list(candidates))
    first, second = rng.sample(list(candidates), 2)

    def score(c: Candidate) -> float:
        return (c.ewma_s or 0.0) * (c.in_flight + 1) / _weight(c)

    return first if score(first) <= score(second) else second


def cheapest(candidates: Sequence[Candidate], rng: random.Random) -> Candidate:
    lowest = min(c.expected_cost for c in candidates)
    tied = [c for c in candidates if c.expected_cost <= lowest * (1 + 1e-9)]
    return least_loaded(tied, rng)


def by_priority(candidates: Sequence[Candidate]) -> Candidate:
    return min(candidates, key=lambda c: (c.target.priority, c.order))


def choose(strategy: str, route: str, candidates: Sequence[Candidate], rng: random.Random,
           scores: RoundRobinScores, explore: float = 0.05) -> Candidate:
    """Pick one of ``candidates`` (non-empty) by ``strategy``."""
    if strategy == "round_robin":
        return scores.pick(route, candidates)
    if strategy == "random":
        return weighted_random(candidates, rng)
    if strategy == "latency_optimized":
        return lowest_latency(candidates, rng, explore)
    if strategy == "cost_optimized":
        return cheapest(candidates, rng)
    if strategy == "failover":
        return by_priority(candidates)
    return least_loaded(candidates, rng)
