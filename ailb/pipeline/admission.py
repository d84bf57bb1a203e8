"""Admission and release of one request, for every door: a virtual key's permission, limits and
budget before the call; settlement, access log and metrics after it.

The route and the prompt estimate are computed once by the caller and passed in: admission,
routing and the budget see the same numbers, from the same router snapshot.
"""

from __future__ import annotations

import re
from dataclasses import replace

import trio

from ailb.accounting.gate import require_model
from ailb.accounting.reservations import default_ceiling
from ailb.keys.auth import Principal
from ailb.model import ChatRequest
from ailb.pipeline.exchange import Exchange
from ailb.pipeline.request_log import finish
from ailb.pipeline.services import Services
from ailb.routing.router import Router
from ailb.routing.table import Route

_REASONING = re.compile(r"^(o\d|gpt-5)")  # OpenAI models that take only max_completion_tokens


def precheck(router: Router, principal: Principal, model: str) -> Route:
    """What can be checked before work is done on a request's behalf (memory, retrieval,
    embeddings), without taking anything: the model routes, and the key may use it. Returns
    the route. Raises NotFound or PermissionDenied."""
    route = router.route(model)
    if principal.key is not None:
        require_model(principal.key, model)
    return route


async def admit(services: Services, exchange: Exchange, principal: Principal, model: str,
                route: Route, prompt_tokens: int, max_tokens: int | None,
                choices: int = 1) -> None:
    """Apply the runtime limits and a virtual key's model permission, limits and budget (the
    admin key has none). Raises PermissionDenied, RateLimited, BudgetExceeded or
    StoreUnavailable (the key store could not take the reservation)."""
    # runtime limits (MarchProxy SetRateLimit) apply to every caller, the admin key included
    services.runtime_limits.admit([f"key:{principal.key_id}", f"model:{route.label}"],
                                  trio.current_time())
    if principal.key is None:
        return
    exchange.ticket = await services.gate.admit(
        principal.key, model, [(t.model, t.provider) for t in route.targets],
        prompt_tokens, max_tokens, choices)


async def admit_chat(services: Services, exchange: Exchange, principal: Principal,
                     chat: ChatRequest, route: Route, prompt_tokens: int) -> ChatRequest:
    """``admit`` for a chat request. A limited key's request without ``max_tokens`` gets the
    reserved ceiling written into it, so the upstream cannot produce more than was reserved:
    the configured default, or less where the key's (or its team's) TPM leaves less room
    (:func:`~ailb.accounting.reservations.default_ceiling`)."""
    n = chat.body.get("n") or 1
    choices = n if isinstance(n, int) else 1
    key = principal.key
    # the key's team limits the request too (ailb/accounting/teams.py): the lower TPM counts
    team = services.keys.teams.get(key.team) if key is not None and key.team else None
    tpms = [t for t in (key.tpm_limit if key else None, team.tpm_limit if team else None)
            if t is not None]
    limited = key is not None and (key.monthly_budget_usd is not None or bool(tpms) or (
        team is not None and team.monthly_budget_usd is not None))
    ceiling = None
    if key is not None and limited and chat.max_tokens is None:
        ceiling = default_ceiling(prompt_tokens, services.settings.accounting.default_max_tokens,
                                  min(tpms, default=None), choices)
    await admit(services, exchange, principal, chat.model, route, prompt_tokens,
                chat.max_tokens if ceiling is None else ceiling, choices)
    if ceiling is None:
        return chat
    field = "max_completion_tokens" if _REASONING.match(chat.model) else "max_tokens"
    native = chat.native
    if native is not None:  # an Anthropic body always has max_tokens; kept for symmetry
        native = {**native, "max_tokens": native.get("max_tokens") or ceiling}
    return replace(chat, body={**chat.body, field: ceiling}, max_tokens=ceiling, native=native)


async def settle(services: Services, exchange: Exchange, status: int) -> dict[str, str]:
    """Charge the request to its key (once; the gate shields and retries the store's part);
    the key's headers for the response."""
    ticket = exchange.ticket
    if ticket is None:
        return {}
    served = ((exchange.upstream_model, exchange.provider, exchange.deployment)
              if exchange.deployment else None)
    exchange.cost_usd += await services.gate.settle(ticket, exchange.usage, exchange.chunks,
                                                    served, exchange.request_id, status,
                                                    exchange.elapsed())
    return ticket.headers


def release(services: Services, exchange: Exchange, status: int, key_id: str,
            error_kind: str = "") -> None:
    """Record a finished (and settled) request and leave the drain count. Exactly once per
    request; it does not await, so nothing runs between leaving the count and the caller's
    next step."""
    finish(services, exchange, status, key_id, error_kind)
    services.drain.leave()
    services.metrics.in_flight.dec()
