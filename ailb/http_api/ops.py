"""Operational endpoints: ``/healthz``, ``/readyz``, ``/metrics``, ``/api/routing/stats``."""

from __future__ import annotations

import json
import time
from typing import Any

import trio
from quart import Response, request

from ailb import __version__
from ailb.errors import GatewayError
from ailb.http_api.admin_auth import key_or_console
from ailb.http_api.errors import error_response
from ailb.pipeline.readiness import is_ready
from ailb.pipeline.services import Services


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    content_type="application/json")


async def healthz(services: Services) -> Response:
    """Liveness: always 200 while the process serves; ``degraded`` when a deployment is down."""
    records = services.board.snapshot()
    types = {d.name: d.type for d in services.settings.deployments}
    providers = {
        name: {
            "type": types.get(name, "?"),
            "state": rec.state,
            "latency_ms": None if rec.latency_s is None else round(rec.latency_s * 1000, 3),
            "checked_at": rec.checked_at,
            "detail": rec.detail,
        }
        for name, rec in records.items()
    }
    config = services.config
    shared = services.shared.report()
    healthy = all(rec.state == "up" for rec in records.values()) and \
        config.last_error is None and all(part["up"] for part in shared.values())
    return _json({"status": "healthy" if healthy else "degraded", "version": __version__,
                  "module_id": services.settings.module_id,
                  "draining": services.drain.draining, "providers": providers,
                  "shared_state": shared,
                  "config": {"generation": config.generation, "loaded_at": config.loaded_at,
                             "last_reload_error": config.last_error}})


async def readyz(services: Services) -> Response:
    """Readiness: 503 while no deployment can serve, while draining, or while the store (keys,
    spend, budgets) cannot be reached: virtual-key requests would all get 503 here, so a load
    balancer should send them elsewhere. Counters that cannot be reached only degrade (the
    outage policy admits on this gateway's share)."""
    shared = services.shared.report()
    ready = is_ready(services)
    return _json({"ready": ready, "shared_state": shared}, 200 if ready else 503)


async def metrics(services: Services) -> Response:
    body, content_type = services.metrics.render(request.headers.get("accept"))
    return Response(body, status=200, content_type=content_type)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


async def routing_stats(services: Services) -> Response:
    """Per-deployment routing state, and the strategy in force per model."""
    try:
        await key_or_console(services)
    except GatewayError as exc:
        return error_response(exc)
    now, wall = trio.current_time(), time.time()
    router, board = services.router, services.board
    deployments: dict[str, Any] = {}
    for name, stats in router.stats().items():
        availability = stats.availability(now, board.last_ok(name), 0)
        state: str = availability
        if availability == "ok" and not board.routable(name):
            state = "down"
        deployments[name] = {
            "provider": services.settings.deployment(name).type,
            "state": {"ok": "healthy", "cooling": "cooling_down"}.get(state, state),
            "cooling_down_until": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(
                wall + stats.cooldown_until - now)) if stats.cooling(now) else None),
            "cooldown_reason": stats.cooldown_reason or None,
            "requests": stats.requests,
            "successes": stats.successes,
            "failures": stats.failures,
            "in_flight": stats.in_flight,
            "latency_ms": {"p50": _ms(stats.percentile(0.5)), "p95": _ms(stats.percentile(0.95)),
                           "p99": _ms(stats.percentile(0.99)), "ewma": _ms(stats.ewma_s)},
        }
    routes = router.models()
    models = {route.public: route.strategy for route in routes}
    # each model's deployments with their traffic weights (configured, or set at runtime)
    weights = {route.public: {t.deployment: t.weight for t in route.targets} for route in routes}
    return _json({"deployments": deployments, "models": models, "weights": weights})
