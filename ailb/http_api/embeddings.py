"""``POST /v1/embeddings``: OpenAI's shape, routed like chat (OpenAI-compatible, Ollama, echo)."""

from __future__ import annotations

import json
from typing import Any

from quart import Response

from ailb.embeddings import parse_embeddings
from ailb.exchange import Exchange
from ailb.http_api.handling import HandOff, run_request
from ailb.http_api.observe import ailb_headers
from ailb.keys.auth import Principal
from ailb.services import Services


async def embeddings(services: Services) -> Response:
    async def step(exchange: Exchange, body: dict[str, Any],
                   principal: Principal) -> Response | HandOff:
        parsed = parse_embeddings(body, exchange.request_id)
        exchange.model = parsed.model
        result = await services.router.embed(parsed, exchange)
        return Response(json.dumps(result.body, separators=(",", ":")), status=200,
                        content_type="application/json", headers=ailb_headers(exchange))

    return await run_request(services, step)
