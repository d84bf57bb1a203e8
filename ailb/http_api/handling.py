"""The frame every API request runs in: drain accounting, auth, body parsing, errors, and the
access-log line and metrics at the end. Handlers supply only their own step."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from quart import Response, request
from werkzeug.exceptions import HTTPException

from ailb.chat_parse import decode_json
from ailb.config_schema import STRATEGIES
from ailb.errors import GatewayError, InvalidRequest, UpstreamError
from ailb.exchange import Exchange
from ailb.http_api.errors import error_response, from_http_exception
from ailb.http_api.observe import ailb_headers, finish, request_id
from ailb.keys.auth import HeaderSource, Principal
from ailb.model import ChatRequest
from ailb.pricing import estimate_prompt_tokens
from ailb.routing.router import Hints
from ailb.services import Services

_log = logging.getLogger("ailb.http")
_REASONING = re.compile(r"^(o\d|gpt-5)")  # OpenAI models that take only max_completion_tokens


class InternalError(GatewayError):
    def __init__(self) -> None:
        super().__init__("The server had an error while processing your request.")


class ShuttingDown(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "server_shutting_down"
    grpc_status = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class HandOff:
    """A response whose body finishes the request itself (a stream): it calls ``release``."""

    response: Response


Step = Callable[[Exchange, dict[str, Any], Principal, Hints], Awaitable[Response | HandOff]]
ErrorRenderer = Callable[[GatewayError, dict[str, str]], Response]


def openai_errors(exc: GatewayError, headers: dict[str, str]) -> Response:
    return error_response(exc, headers)


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


def json_response(exchange: Exchange, body: Mapping[str, Any] | bytes) -> Response:
    """A 200 JSON answer with the AILB headers; bytes are relayed as they are."""
    data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":"))
    return Response(data, status=200, content_type="application/json",
                    headers=ailb_headers(exchange))


def admit(services: Services, exchange: Exchange, principal: Principal, model: str,
          body: Mapping[str, Any], max_tokens: int | None, choices: int = 1) -> None:
    """Apply a virtual key's model permission, limits and budget (the admin key has none).
    Raises NotFound, PermissionDenied, RateLimited or BudgetExceeded."""
    if principal.key is None:
        return
    route = services.router.route(model)
    exchange.ticket = services.gate.admit(
        principal.key, model, [(t.model, t.provider) for t in route.targets],
        estimate_prompt_tokens(body), max_tokens, choices)


def admit_chat(services: Services, exchange: Exchange, principal: Principal,
               chat: ChatRequest) -> ChatRequest:
    """``admit`` for a chat request. A limited key's request without ``max_tokens`` gets the
    reserved ceiling written into it, so the upstream cannot produce more than was reserved."""
    choices = chat.body.get("n") or 1
    admit(services, exchange, principal, chat.model, chat.body, chat.max_tokens,
          choices if isinstance(choices, int) else 1)
    key = principal.key
    if key is None or chat.max_tokens is not None or (
            key.monthly_budget_usd is None and key.tpm_limit is None):
        return chat
    ceiling = services.settings.accounting.default_max_tokens
    field = "max_completion_tokens" if _REASONING.match(chat.model) else "max_tokens"
    return replace(chat, body={**chat.body, field: ceiling}, max_tokens=ceiling)


def settle(services: Services, exchange: Exchange, status: int) -> dict[str, str]:
    """Charge the request to its key (once); the key's headers for the response."""
    ticket = exchange.ticket
    if ticket is None:
        return {}
    served = ((exchange.upstream_model, exchange.provider, exchange.deployment)
              if exchange.deployment else None)
    services.gate.settle(ticket, exchange.usage, exchange.chunks, served, exchange.request_id,
                         status, exchange.elapsed())
    return ticket.headers


def release(services: Services, exchange: Exchange, status: int, key_id: str) -> None:
    """Record a finished request and leave the drain count. Call exactly once per request."""
    settle(services, exchange, status)
    finish(services, exchange, status, key_id)
    services.drain.leave()
    services.metrics.in_flight.dec()


async def run_request(services: Services, step: Step,
                      render_error: ErrorRenderer = openai_errors) -> Response:
    exchange = Exchange(request_id(request.headers))
    services.drain.enter()
    services.metrics.in_flight.inc()
    status = 499  # if we are cancelled before answering, the client went away
    key_id = "-"
    handed_off = False
    try:
        try:
            if services.drain.draining:
                raise ShuttingDown("AILB is shutting down; retry on another instance.")
            principal = services.auth.authenticate(request.headers)
            key_id = principal.key_id
            try:
                data = await request.get_data(cache=False, as_text=False, parse_form_data=False)
            except HTTPException as exc:
                raise from_http_exception(exc) from exc
            hints = route_hints(request.headers)
            outcome = await step(exchange, decode_json(data), principal, hints)
        except GatewayError as exc:
            status = exc.status
            exchange.error_kind = exc.kind if isinstance(exc, UpstreamError) else exc.type
            return render_error(exc, {**ailb_headers(exchange), **settle(services, exchange,
                                                                         status)})
        except Exception:  # a bug of ours: answer 500 under this request's id, and log it
            _log.exception("unhandled error", extra={"fields": {
                "request_id": exchange.request_id}})
            status = 500
            exchange.error_kind = "internal"
            return render_error(InternalError(), ailb_headers(exchange))
        if isinstance(outcome, HandOff):
            handed_off = True
            return outcome.response
        status = outcome.status_code
        outcome.headers.update(settle(services, exchange, status))  # charged before it leaves
        return outcome
    finally:
        if not handed_off:
            release(services, exchange, status, key_id)
