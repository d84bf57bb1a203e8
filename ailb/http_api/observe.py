"""The AILB response headers of an exchange (HTTP only)."""

from __future__ import annotations

from ailb.exchange import Exchange


def ailb_headers(exchange: Exchange) -> dict[str, str]:
    headers = {"x-request-id": exchange.request_id,
               "x-ailb-overhead-ms": f"{exchange.overhead_s() * 1000:.3f}"}
    if exchange.attempts:
        headers["x-ailb-attempts"] = str(exchange.attempts)
        headers["x-ailb-strategy"] = exchange.strategy
    if exchange.degraded:
        headers["x-ailb-degraded"] = "no-healthy-deployment"
    if exchange.hedged:
        headers["x-ailb-hedged"] = exchange.hedge_target
    if exchange.deployment:
        headers["x-ailb-provider"] = exchange.provider
        headers["x-ailb-deployment"] = exchange.deployment
        headers["x-ailb-model"] = f"{exchange.deployment}/{exchange.upstream_model}"
    headers.update(exchange.notes)
    return headers
