"""Operational endpoints: ``/healthz``, ``/readyz``, ``/metrics``, and ``GET /v1/models``."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, request

from ailb import __version__
from ailb.errors import GatewayError
from ailb.http_api.errors import error_response
from ailb.services import Services


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    content_type="application/json")


async def healthz(services: Services) -> Response:
    """Liveness: always 200 while the process serves; ``degraded`` when a deployment is down."""
    records = services.board.snapshot()
    providers = {
        name: {
            "type": services.settings.deployment(name).type,
            "state": rec.state,
            "latency_ms": None if rec.latency_s is None else round(rec.latency_s * 1000, 3),
            "checked_at": rec.checked_at,
            "detail": rec.detail,
        }
        for name, rec in records.items()
    }
    healthy = all(rec.state == "up" for rec in records.values())
    return _json({"status": "healthy" if healthy else "degraded", "version": __version__,
                  "module_id": services.settings.module_id,
                  "draining": services.drain.draining, "providers": providers})


async def readyz(services: Services) -> Response:
    """Readiness: 503 while no deployment can serve, or while draining."""
    ready = services.board.any_up() and not services.drain.draining
    return _json({"ready": ready}, 200 if ready else 503)


async def metrics(services: Services) -> Response:
    body, content_type = services.metrics.render(request.headers.get("accept"))
    return Response(body, status=200, content_type=content_type)


async def models(services: Services) -> Response:
    try:
        services.auth.authenticate(request.headers)
    except GatewayError as exc:
        return error_response(exc)
    data = [{"id": route.public, "object": "model", "created": 0, "owned_by": route.owned_by}
            for route in services.router.models()]
    return _json({"object": "list", "data": data})
