"""``POST /v1/embeddings``: OpenAI's shape, routed like chat (OpenAI-compatible, Ollama, echo)."""

from __future__ import annotations

from typing import Any

from quart import Response

from ailb.admission import admit
from ailb.embeddings import parse_embeddings
from ailb.exchange import Exchange
from ailb.http_api.handling import HandOff, json_response, run_request
from ailb.keys.auth import Principal
from ailb.routing.router import Hints
from ailb.services import Services


async def embeddings(services: Services) -> Response:
    async def step(exchange: Exchange, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> Response | HandOff:
        parsed = parse_embeddings(body, exchange.request_id)
        exchange.model = parsed.model
        text = " ".join(parsed.inputs)
        await admit(services, exchange, principal, parsed.model,
                    {"messages": [{"role": "user", "content": text}]}, 1)
        result = await services.router.embed(parsed, exchange, hints)
        return json_response(exchange, result.body)

    return await run_request(services, step)
