"""Choosing one target among the healthy candidates. Pure: values in, a value out.

``load_balanced`` (the default): least outstanding requests relative to weight; ties broken at
random. The other strategies of the configuration guide currently choose the same way and are
filled in by the routing work; ``strategy_in_force`` tells callers which one actually applied.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from ailb.routing.table import Target

IMPLEMENTED = frozenset({"load_balanced"})


def strategy_in_force(name: str) -> str:
    return name if name in IMPLEMENTED else "load_balanced"


def least_loaded(
    candidates: Sequence[Target], in_flight: Mapping[str, int], rng: random.Random
) -> Target:
    """The candidate with the fewest in-flight requests per unit of weight (ties: random)."""
    best: list[Target] = []
    best_load = float("inf")
    for target in candidates:
        weight = target.weight if target.weight > 0 else 1e-9
        load = (in_flight.get(target.deployment, 0) + 1) / weight
        if load < best_load:
            best, best_load = [target], load
        elif load == best_load:
            best.append(target)
    return best[0] if len(best) == 1 else rng.choice(best)


def choose(
    strategy: str,
    candidates: Sequence[Target],
    in_flight: Mapping[str, int],
    rng: random.Random,
) -> Target:
    """Pick one of ``candidates`` (non-empty) by ``strategy``."""
    del strategy  # every strategy is load_balanced until the routing work lands (see module doc)
    return least_loaded(candidates, in_flight, rng)
