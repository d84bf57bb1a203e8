"""``POST /v1/chat/completions``: parse, route, answer (JSON or SSE)."""

from __future__ import annotations

import json

from quart import Response, request
from werkzeug.exceptions import HTTPException

from ailb.chat_parse import decode_json, parse_chat
from ailb.errors import GatewayError, UpstreamError
from ailb.exchange import Exchange
from ailb.http_api.errors import error_response, from_http_exception
from ailb.http_api.observe import ailb_headers, finish, request_id
from ailb.http_api.sse import ShuttingDown, SSEBody
from ailb.services import Services


async def chat_completions(services: Services) -> Response:
    exchange = Exchange(request_id(request.headers))
    drain = services.drain
    drain.enter()
    services.metrics.in_flight.inc()
    status = 499  # if we are cancelled before answering, the client went away
    key_id = "-"
    handed_off = False
    try:
        try:
            if drain.draining:
                raise ShuttingDown("AILB is shutting down; retry on another instance.")
            principal = services.auth.authenticate(request.headers)
            key_id = principal.key_id
            try:
                data = await request.get_data(cache=False, as_text=False, parse_form_data=False)
            except HTTPException as exc:
                raise from_http_exception(exc) from exc
            chat = parse_chat(decode_json(data), exchange.request_id)
            exchange.model = chat.model
            exchange.stream = chat.stream
            if chat.stream:
                opened = await services.router.open_stream(chat, exchange)
                response = Response(
                    SSEBody(services, chat, exchange, opened, key_id), status=200,
                    content_type="text/event-stream; charset=utf-8",
                    headers={**ailb_headers(exchange), "cache-control": "no-cache"})
                response.timeout = None  # Quart would cut streams after RESPONSE_TIMEOUT
                handed_off = True
                return response
            result = await services.router.complete(chat, exchange)
        except GatewayError as exc:
            status = exc.status
            exchange.error_kind = exc.kind if isinstance(exc, UpstreamError) else exc.type
            return error_response(exc, ailb_headers(exchange))
        status = 200
        return Response(json.dumps(result.body, separators=(",", ":")), status=200,
                        content_type="application/json", headers=ailb_headers(exchange))
    finally:
        if not handed_off:
            finish(services, exchange, status, key_id)
            drain.leave()
            services.metrics.in_flight.dec()
