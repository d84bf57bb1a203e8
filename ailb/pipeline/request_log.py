"""The end of every request, whatever carried it (HTTP or gRPC): one access-log line and the
metrics; and the request id every request gets."""

from __future__ import annotations

import logging
import re
import time
import uuid

from ailb import logs
from ailb.keys.auth import HeaderSource
from ailb.pipeline.exchange import Exchange
from ailb.pipeline.recent import Recent
from ailb.pipeline.services import Services

_log = logging.getLogger(logs.ACCESS)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(headers: HeaderSource) -> str:
    """The client's ``x-request-id`` when it is sane, else a new one."""
    given = headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


def finish(services: Services, exchange: Exchange, status: int, key_id: str,
           error_kind: str = "") -> None:
    """Record a finished request. ``status`` 499 means the client went away first."""
    m = services.metrics
    model = exchange.route or "-"  # never the client's raw string: labels must stay bounded
    provider = exchange.provider or "-"
    total = exchange.elapsed()
    overhead = max(0.0, total - exchange.upstream_s - exchange.client_s)
    series = m.request_series(model, provider)
    series.requests(status).inc()
    services.window.record(status, total)
    series.duration.observe(total)
    series.overhead.observe(overhead)
    if exchange.first_token_s is not None:
        series.ttft().observe(exchange.first_token_s)
    usage = exchange.usage
    if usage is not None:
        prompt, completion = series.tokens()
        prompt.inc(usage.prompt_tokens)
        completion.inc(usage.completion_tokens)
        deployment = exchange.deployment or "-"
        if usage.cached_tokens:
            m.prompt_cached.labels(deployment=deployment).inc(usage.cached_tokens)
        if usage.cache_write_tokens:
            m.prompt_cache_writes.labels(deployment=deployment).inc(usage.cache_write_tokens)
    # the virtual key's record (None: the admin key or an anonymous caller); its team as the
    # key says now
    key = exchange.ticket.key if exchange.ticket else services.keys.get(key_id)
    services.recent.add(Recent(
        request_id=exchange.request_id, key_id=key_id, team=key.team if key else None,
        at=time.time(),
        model=exchange.model, deployment=exchange.deployment or None,
        provider=exchange.provider or None, stream=exchange.stream, status=status,
        latency_ms=round(total * 1000, 3),
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None))
    if m.per_key is not None and key is not None:  # a virtual key's request, admitted or not
        m.finished(services.keys, key.id, key.team, status,
                   usage.prompt_tokens if usage else 0,
                   usage.completion_tokens if usage else 0, exchange.cost_usd)
    logs.event(
        _log, "request",
        request_id=exchange.request_id, key_id=key_id, model=exchange.model,
        deployment=exchange.deployment, provider=exchange.provider,
        upstream_model=exchange.upstream_model, stream=exchange.stream, status=status,
        error=error_kind or None,
        duration_ms=round(total * 1000, 3),
        upstream_ms=round(exchange.upstream_s * 1000, 3),
        overhead_ms=round(overhead * 1000, 3),
        ttft_ms=None if exchange.first_token_s is None else round(exchange.first_token_s * 1000, 3),
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        cached_tokens=usage.cached_tokens if usage else None,
        cache_write_tokens=usage.cache_write_tokens if usage else None,
    )
