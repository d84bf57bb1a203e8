"""``POST /v1/embeddings``: OpenAI's shape, routed like chat (OpenAI-compatible, Ollama, echo)."""

from __future__ import annotations

from typing import Any

from quart import Response

from ailb.http_api.handling import HandOff, json_response, run_request
from ailb.keys.auth import Principal
from ailb.pipeline.embed import run_embed
from ailb.pipeline.embeddings_parse import parse_embeddings
from ailb.pipeline.frame import Frame
from ailb.pipeline.services import Services
from ailb.routing.router import Hints


async def embeddings(services: Services) -> Response:
    async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> Response | HandOff:
        parsed = parse_embeddings(body, frame.exchange.request_id)
        result = await run_embed(services, frame.exchange, principal, parsed, hints)
        return json_response(result.body)

    return await run_request(services, step)
