"""``POST /v1/messages``: the Anthropic Messages API in front of every routed model."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from quart import Response

from ailb.admission import admit_chat
from ailb.anthropic_ingress import error_object, to_message, to_openai_chat
from ailb.chat_parse import parse_chat
from ailb.errors import GatewayError
from ailb.exchange import Exchange
from ailb.http_api.anthropic_sse import AnthropicEncoder
from ailb.http_api.errors import error_headers
from ailb.http_api.handling import HandOff, json_response, run_request
from ailb.http_api.sse import stream_response
from ailb.keys.auth import Principal
from ailb.routing.router import Hints
from ailb.services import Services


def anthropic_error(exc: GatewayError, headers: dict[str, str]) -> Response:
    return Response(json.dumps(error_object(exc), separators=(",", ":")), status=exc.status,
                    content_type="application/json", headers={**error_headers(exc), **headers})


async def messages(services: Services) -> Response:
    async def step(exchange: Exchange, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> Response | HandOff:
        chat = replace(parse_chat(to_openai_chat(body), exchange.request_id), native=body)
        exchange.model = chat.model
        exchange.stream = chat.stream
        chat = await admit_chat(services, exchange, principal, chat)
        if chat.stream:
            opened = await services.router.open_stream(chat, exchange, hints)
            encoder = AnthropicEncoder(f"msg_{exchange.request_id}", chat.model)
            return stream_response(services, exchange, opened, principal.key_id, encoder)
        result = await services.router.complete(chat, exchange, hints)
        if result.native is not None:  # an Anthropic deployment answered: relay its message
            return json_response(exchange, result.native)
        return json_response(exchange, to_message(result.body, result.usage, chat.model,
                                                  exchange.request_id))

    return await run_request(services, step, anthropic_error)
