"""Routing hints a client may give with a request, whatever its door: ``x-ailb-strategy`` and
``x-ailb-hedge-ms`` (HTTP headers or gRPC metadata)."""

from __future__ import annotations

from ailb.config.schema import STRATEGIES
from ailb.errors import InvalidRequest
from ailb.keys.auth import HeaderSource
from ailb.routing.router import Hints


def route_hints(headers: HeaderSource) -> Hints:
    """``x-ailb-strategy`` and ``x-ailb-hedge-ms``. Raises InvalidRequest for bad values."""
    strategy = headers.get("x-ailb-strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise InvalidRequest(f"x-ailb-strategy must be one of {', '.join(STRATEGIES)}.",
                             param="x-ailb-strategy")
    hedge = headers.get("x-ailb-hedge-ms")
    hedge_ms: float | None = None
    if hedge is not None:
        try:
            hedge_ms = float(hedge)
        except ValueError:
            hedge_ms = -1.0
        if not 0 <= hedge_ms <= 600_000:
            raise InvalidRequest("x-ailb-hedge-ms must be a number of milliseconds (0 turns "
                                 "hedging off).", param="x-ailb-hedge-ms")
    return Hints(strategy, hedge_ms)
