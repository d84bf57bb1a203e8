"""The frame every API request runs in: drain accounting, auth, body parsing, errors, and the
access-log line and metrics at the end. Handlers supply only their own step."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from quart import Response, request
from werkzeug.exceptions import HTTPException

from ailb.admission import enter, release, settle
from ailb.chat_parse import decode_json
from ailb.config_schema import STRATEGIES
from ailb.errors import GatewayError, InvalidRequest, ShuttingDown, UpstreamError
from ailb.exchange import Exchange
from ailb.http_api.errors import error_response, from_http_exception
from ailb.http_api.observe import ailb_headers
from ailb.keys.auth import HeaderSource, Principal
from ailb.request_log import request_id
from ailb.routing.router import Hints
from ailb.services import Services

_log = logging.getLogger("ailb.http")


class InternalError(GatewayError):
    def __init__(self) -> None:
        super().__init__("The server had an error while processing your request.")


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


async def run_request(services: Services, step: Step,
                      render_error: ErrorRenderer = openai_errors) -> Response:
    exchange = Exchange(request_id(request.headers))
    enter(services)
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
