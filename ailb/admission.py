"""Per-request admission and release, shared by every ingress (HTTP and gRPC): a virtual key's
permission, limits and budget before the call; settlement, access log and metrics after it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import trio

from ailb.accounting.gate import require_model
from ailb.exchange import Exchange
from ailb.keys.auth import Principal
from ailb.model import ChatRequest
from ailb.pricing import estimate_prompt_tokens
from ailb.request_log import finish
from ailb.services import Services

_REASONING = re.compile(r"^(o\d|gpt-5)")  # OpenAI models that take only max_completion_tokens


def enter(services: Services) -> None:
    """Count a request in (drain, in-flight gauge); ``release`` counts it out."""
    services.drain.enter()
    services.metrics.in_flight.inc()


def precheck(services: Services, principal: Principal, model: str) -> None:
    """What can be checked before work is done on a request's behalf (memory, retrieval,
    embeddings), without taking anything: the model routes, and the key may use it. Raises
    NotFound or PermissionDenied."""
    services.router.route(model)
    if principal.key is not None:
        require_model(principal.key, model)


async def admit(services: Services, exchange: Exchange, principal: Principal, model: str,
                body: Mapping[str, Any], max_tokens: int | None, choices: int = 1) -> None:
    """Apply a virtual key's model permission, limits and budget (the admin key has none).
    Raises NotFound, PermissionDenied, RateLimited, BudgetExceeded or StoreUnavailable."""
    route = services.router.route(model)
    # runtime limits (MarchProxy SetRateLimit) apply to every caller, the admin key included
    services.runtime_limits.admit([f"key:{principal.key_id}", f"model:{route.label}"],
                                  trio.current_time())
    if principal.key is None:
        return
    exchange.ticket = await services.gate.admit(
        principal.key, model, [(t.model, t.provider) for t in route.targets],
        estimate_prompt_tokens(body), max_tokens, choices)


async def admit_chat(services: Services, exchange: Exchange, principal: Principal,
                     chat: ChatRequest) -> ChatRequest:
    """``admit`` for a chat request. A limited key's request without ``max_tokens`` gets the
    reserved ceiling written into it, so the upstream cannot produce more than was reserved."""
    choices = chat.body.get("n") or 1
    await admit(services, exchange, principal, chat.model, chat.body, chat.max_tokens,
                choices if isinstance(choices, int) else 1)
    key = principal.key
    if key is None or chat.max_tokens is not None or (
            key.monthly_budget_usd is None and key.tpm_limit is None):
        return chat
    ceiling = services.settings.accounting.default_max_tokens
    field = "max_completion_tokens" if _REASONING.match(chat.model) else "max_tokens"
    return replace(chat, body={**chat.body, field: ceiling}, max_tokens=ceiling)


async def settle(services: Services, exchange: Exchange, status: int) -> dict[str, str]:
    """Charge the request to its key (once); the key's headers for the response. Shielded
    from cancellation (the gate's settle is)."""
    ticket = exchange.ticket
    if ticket is None:
        return {}
    served = ((exchange.upstream_model, exchange.provider, exchange.deployment)
              if exchange.deployment else None)
    await services.gate.settle(ticket, exchange.usage, exchange.chunks, served,
                               exchange.request_id, status, exchange.elapsed())
    return ticket.headers


async def release(services: Services, exchange: Exchange, status: int, key_id: str) -> None:
    """Record a finished request and leave the drain count. Call exactly once per request,
    also from a ``finally`` of a cancelled request: it is shielded from cancellation."""
    try:
        with trio.CancelScope(shield=True):
            await settle(services, exchange, status)
    finally:
        finish(services, exchange, status, key_id)
        services.drain.leave()
        services.metrics.in_flight.dec()
