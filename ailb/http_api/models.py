"""``GET /v1/models`` and ``GET /v1/models/{model_id}``: the models this gateway routes, in
OpenAI's shape, or in Anthropic's when the request carries ``anthropic-version`` (what the
Anthropic SDK always sends), so both SDKs' ``models.list`` and ``models.retrieve`` work.

Anthropic's list is a page: ``limit`` (1-1000, default 20), ``after_id`` / ``before_id``
cursors, and ``has_more``, ``first_id``, ``last_id``. Neither API is told a creation date
(AILB does not know one): OpenAI gets ``created: 0``, Anthropic the epoch, as its API allows
for an unknown release date."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from quart import Response, request

from ailb.errors import GatewayError, InvalidRequest, NotFound
from ailb.http_api.caller import http_caller
from ailb.http_api.errors import anthropic_error_response, error_response
from ailb.http_api.handling import json_response
from ailb.pipeline.services import Services
from ailb.routing.table import Route

EPOCH: Final = "1970-01-01T00:00:00Z"
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 1000


def openai_model(route: Route) -> dict[str, Any]:
    return {"id": route.public, "object": "model", "created": 0, "owned_by": route.owned_by}


def anthropic_model(route: Route) -> dict[str, Any]:
    return {"type": "model", "id": route.public, "display_name": route.public,
            "created_at": EPOCH, "lifecycle": "active"}


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit: Input should be an integer from 1 to {MAX_LIMIT}",
                             param="limit")
    return limit


def anthropic_page(routes: Sequence[Route], limit: int, after_id: str | None,
                   before_id: str | None) -> dict[str, Any]:
    """One page of Anthropic's model list. An unknown cursor gives an empty page."""
    ids = [route.public for route in routes]
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
        chosen, more = routes[start:start + limit], start + limit < len(routes)
    elif before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        chosen, more = routes[max(0, end - limit):end], end - limit > 0
    else:
        chosen, more = routes[:limit], limit < len(routes)
    data = [anthropic_model(route) for route in chosen]
    return {"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def _error(exc: GatewayError, anthropic: bool) -> Response:
    return anthropic_error_response(exc) if anthropic else error_response(exc)


async def models(services: Services) -> Response:
    """The list (``models.list``)."""
    anthropic = "anthropic-version" in request.headers
    try:
        services.auth.authenticate(request.headers, http_caller())
        routes = services.router.models()
        if not anthropic:
            return json_response({"object": "list", "data": [openai_model(r) for r in routes]})
        args = request.args
        return json_response(anthropic_page(routes, _limit(args.get("limit")), args.get("after_id"),
                                    args.get("before_id")))
    except GatewayError as exc:
        return _error(exc, anthropic)


async def model(services: Services, model_id: str) -> Response:
    """One model (``models.retrieve``): a public name ``/v1/models`` lists, or 404
    ``model_not_found``."""
    anthropic = "anthropic-version" in request.headers
    try:
        services.auth.authenticate(request.headers, http_caller())
        route = next((r for r in services.router.models() if r.public == model_id), None)
        if route is None:
            raise NotFound(f"The model `{model_id}` does not exist or is not routed by this "
                           "gateway.", param="model", code="model_not_found")
        return json_response(anthropic_model(route) if anthropic else openai_model(route))
    except GatewayError as exc:
        return _error(exc, anthropic)
