"""Readiness, one rule for every door that reports it: HTTP ``/readyz`` and gRPC
``grpc.health.v1.Health``."""

from __future__ import annotations

from ailb.pipeline.services import Services


def is_ready(services: Services) -> bool:
    """Ready unless no deployment can serve, the process is draining (``mark_unready`` at
    shutdown), or the store (keys, spend, budgets) cannot be reached: virtual-key requests would
    all get 503 then, so a load balancer should send them elsewhere. Counters that cannot be
    reached only degrade (the outage policy admits on this gateway's share)."""
    return services.board.any_up() and not services.drain.unready and \
        services.shared.up("store")
