"""``POST /v1/chat/completions``: parse, route, answer (JSON or SSE)."""

from __future__ import annotations

from typing import Any

from quart import Response

from ailb.admission import admit_chat
from ailb.chat_parse import parse_chat
from ailb.exchange import Exchange
from ailb.http_api.handling import HandOff, json_response, run_request
from ailb.http_api.sse import OpenAIEncoder, stream_response
from ailb.keys.auth import Principal
from ailb.routing.router import Hints
from ailb.services import Services


async def chat_completions(services: Services) -> Response:
    async def step(exchange: Exchange, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> Response | HandOff:
        chat = parse_chat(body, exchange.request_id)
        exchange.model = chat.model
        exchange.stream = chat.stream
        chat = admit_chat(services, exchange, principal, chat)
        if chat.stream:
            opened = await services.router.open_stream(chat, exchange, hints)
            return stream_response(services, exchange, opened, principal.key_id,
                                   OpenAIEncoder(chat.include_usage))
        result = await services.router.complete(chat, exchange, hints)
        return json_response(exchange, result.raw or result.body)

    return await run_request(services, step)
