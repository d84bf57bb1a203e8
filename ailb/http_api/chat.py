"""``POST /v1/chat/completions``: parse, route, answer (JSON or SSE)."""

from __future__ import annotations

import json
from typing import Any

from quart import Response

from ailb.chat_parse import parse_chat
from ailb.exchange import Exchange
from ailb.http_api.handling import HandOff, run_request
from ailb.http_api.observe import ailb_headers
from ailb.http_api.sse import OpenAIEncoder, SSEBody
from ailb.keys.auth import Principal
from ailb.services import Services


async def chat_completions(services: Services) -> Response:
    async def step(exchange: Exchange, body: dict[str, Any],
                   principal: Principal) -> Response | HandOff:
        chat = parse_chat(body, exchange.request_id)
        exchange.model = chat.model
        exchange.stream = chat.stream
        if chat.stream:
            opened = await services.router.open_stream(chat, exchange)
            response = Response(
                SSEBody(services, exchange, opened, principal.key_id,
                        OpenAIEncoder(chat.include_usage)), status=200,
                content_type="text/event-stream; charset=utf-8",
                headers={**ailb_headers(exchange), "cache-control": "no-cache"})
            response.timeout = None  # Quart would cut streams after RESPONSE_TIMEOUT
            return HandOff(response)
        result = await services.router.complete(chat, exchange)
        return Response(json.dumps(result.body, separators=(",", ":")), status=200,
                        content_type="application/json", headers=ailb_headers(exchange))

    return await run_request(services, step)
