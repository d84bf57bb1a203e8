"""What a request tells its client besides the answer: AILB's notes (``x-request-id``,
``x-ailb-*``, a key's ``x-ratelimit-*``), sent as HTTP headers or as gRPC metadata, and what
an error adds to them (``retry-after``...). Keys are lowercase, values ASCII text."""

from __future__ import annotations

import math

from ailb.errors import GatewayError
from ailb.pipeline.exchange import Exchange


def error_headers(exc: GatewayError) -> dict[str, str]:
    """What an error adds: the key's limits, ``retry-after`` and ``retry-after-ms`` when
    waiting helps, ``x-should-retry: false`` when it cannot (a spent budget)."""
    headers: dict[str, str] = dict(exc.headers)
    if exc.status == 402:  # the budget will not refill by waiting: tell SDKs not to retry
        headers["x-should-retry"] = "false"
    if exc.retry_after_s is not None:
        headers["retry-after"] = str(max(0, math.ceil(exc.retry_after_s)))
        headers["retry-after-ms"] = str(max(0, int(exc.retry_after_s * 1000)))
    return headers


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


def opening_notes(exchange: Exchange) -> dict[str, str]:
    """What is known when an answer starts, before the request is settled: AILB's notes and a
    key's rate-limit headers as admission left them (a stream's HTTP headers, gRPC initial
    metadata)."""
    ticket = exchange.ticket
    return {**ailb_headers(exchange), **(ticket.headers if ticket is not None else {})}
