"""``POST /v1/chat/completions``: parse, add memory and retrieved context, route, answer (JSON
or SSE), remember the turn; deterministic answers may come from the response cache."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, request

from ailb.admission import admit_chat, precheck
from ailb.augment import observer, prepare, remember
from ailb.chat_parse import parse_chat
from ailb.exchange import Exchange
from ailb.http_api.handling import HandOff, json_response, run_request
from ailb.http_api.sse import OpenAIEncoder, stream_response
from ailb.keys.auth import Principal
from ailb.memory.turns import answer_message
from ailb.routing.router import Hints
from ailb.services import Services


async def chat_completions(services: Services) -> Response:
    async def step(exchange: Exchange, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> Response | HandOff:
        chat = parse_chat(body, exchange.request_id)
        exchange.model = chat.model
        exchange.stream = chat.stream
        precheck(services, principal, chat.model)  # before memory and retrieval work for it
        prepared = await prepare(services, principal, chat, request.headers)
        exchange.notes.update(prepared.notes)
        chat = await admit_chat(services, exchange, principal, prepared.chat)
        if chat.stream:
            opened = await services.router.open_stream(chat, exchange, hints)
            return stream_response(services, exchange, opened, principal.key_id,
                                   OpenAIEncoder(chat.include_usage),
                                   observer(services, prepared))
        cache = services.responses
        key = cache.key(principal.key_id, chat.body, chat.stream) if cache else None
        if cache is not None and key is not None:
            answer = cache.get(key)
            exchange.notes["x-ailb-cache"] = "miss" if answer is None else "hit"
            if answer is not None:
                await remember(services, prepared, answer_message(json.loads(answer)))
                return json_response(exchange, answer)
        result = await services.router.complete(chat, exchange, hints)
        data = result.raw or json.dumps(result.body, separators=(",", ":")).encode()
        if cache is not None and key is not None:
            cache.put(key, data)
        await remember(services, prepared, answer_message(result.body))
        return json_response(exchange, data)

    return await run_request(services, step)
